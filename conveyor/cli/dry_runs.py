"""``conveyor dry-runs``: simulate an automation over days, follow it, read what it found."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Annotated, Any, TextIO

import httpx
import typer

from conveyor.cli.client import (
    AllPages,
    Api,
    ApiKey,
    Cursor,
    Limit,
    Url,
    connect,
    json_object,
    list_command,
    opt,
    params_of,
)
from conveyor.cli.common import STATUS_EXIT, ExitCode, Output, OutputFormat, emit, fail
from conveyor.cli.follow import segment
from conveyor.cli.output import emit_page, show_fields, to_json

app = typer.Typer(
    help="Dry runs: simulate an automation over days, sending and starting nothing.",
    no_args_is_help=True,
)

FINISHED = frozenset({"completed", "failed", "cancelled"})
_COLUMNS = ("id", "status", "days", "contacts", "counts", "automation_id")
_RESULT_COLUMNS = ("id", "run_at", "status", "agrees", "profile_id", "result_id")
_BAR = 24

DryRunId = Annotated[str, typer.Argument(metavar="DRY_RUN_ID", help="the dry run's id")]
Wait = Annotated[
    bool,
    opt(
        "--wait",
        "CONVEYOR_DRY_RUN_WAIT",
        "wait until it ends (a progress bar on a terminal); exit with its outcome",
    ),
]


def _row(dry_run: Mapping[str, Any]) -> dict[str, Any]:
    """A dry run for a table: progress as done/total, counts as name=n."""
    counts = dry_run.get("counts") or {}
    return {
        **dry_run,
        "days": f"{dry_run['days']['done']}/{dry_run['days']['total']}",
        "contacts": f"{dry_run['contacts']['done']}/{dry_run['contacts']['total']}",
        "counts": " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-",
    }


def _emit(dry_run: Mapping[str, Any], output: OutputFormat) -> None:
    emit(_row(dry_run) if output is OutputFormat.TABLE else dry_run, output, _COLUMNS)


class ProgressBar:
    """One line on a terminal, redrawn in place: days done, contacts, status."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    @staticmethod
    def line(dry_run: Mapping[str, Any]) -> str:
        """The bar's text for the dry run's progress."""
        done, total = dry_run["days"]["done"], dry_run["days"]["total"]
        filled = _BAR * done // total if total else 0
        contacts = dry_run["contacts"]["done"]
        return (
            f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total} days, "
            f"{contacts} contact-days  {dry_run['status']}"
        )

    def update(self, dry_run: Mapping[str, Any]) -> None:
        """Redraw the line."""
        self.stream.write("\r\x1b[K" + self.line(dry_run))
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the line, leaving the last state shown."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def wait_for(api: Api, dry_run_id: str) -> dict[str, Any]:
    """Poll the dry run until it ends; a progress bar on stderr if it is a terminal."""
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    delay = 0.1
    try:
        while True:
            dry_run: dict[str, Any] = api.call("GET", f"/dry-runs/{segment(dry_run_id)}")
            if bar is not None:
                bar.update(dry_run)
            if dry_run["status"] in FINISHED:
                return dry_run
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    except KeyboardInterrupt:
        raise fail(
            f"stopped waiting; dry run {dry_run_id} goes on (`conveyor dry-runs cancel "
            f"{dry_run_id}` stops it)",
            130,
        ) from None
    finally:
        if bar is not None:
            bar.close()


def _finish(dry_run: Mapping[str, Any]) -> None:
    code = STATUS_EXIT[str(dry_run["status"])]
    if code is not ExitCode.OK:
        typer.echo(f"dry run {dry_run['id']} ended {dry_run['status']}", err=True)
        raise typer.Exit(code)


@app.command("create")
def create(
    automation: Annotated[
        str, typer.Argument(metavar="AUTOMATION", help="the automation's name or id")
    ],
    start_date: Annotated[
        str | None, opt("--start-date", "CONVEYOR_DRY_RUN_START_DATE", "first day, YYYY-MM-DD")
    ] = None,
    end_date: Annotated[
        str | None,
        opt("--end-date", "CONVEYOR_DRY_RUN_END_DATE", "last day (inclusive), YYYY-MM-DD"),
    ] = None,
    timezone: Annotated[
        str | None,
        opt("--timezone", "CONVEYOR_DRY_RUN_TIMEZONE", "the days' time zone (Europe/Paris)"),
    ] = None,
    profile_id: Annotated[
        list[str] | None,
        opt(
            "--profile-id",
            "CONVEYOR_DRY_RUN_PROFILE_IDS",
            "a contact to simulate (repeatable; required for manual triggers)",
        ),
    ] = None,
    version: Annotated[
        int | None,
        opt("--version", "CONVEYOR_DRY_RUN_VERSION", "simulate this version", min=1),
    ] = None,
    payload: Annotated[
        str | None,
        opt("--payload", "CONVEYOR_DRY_RUN_PAYLOAD", "trigger payload: a JSON object, or @FILE"),
    ] = None,
    wait: Wait = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Start a dry run of AUTOMATION (needs automations:trigger; --wait also dry-runs:read).

    Prints the dry run. With --wait it waits for the end, prints the dry run
    then, and exits 0 if it completed, 3 if it failed, 5 if it was cancelled.
    """
    body: dict[str, Any] = {"dry_run": True}
    body.update(
        {
            k: v
            for k, v in {
                "start_date": start_date,
                "end_date": end_date,
                "timezone": timezone,
                "profile_ids": profile_id or None,
                "version": version,
            }.items()
            if v is not None
        }
    )
    if payload is not None:
        body["payload"] = json_object(payload, "--payload")
    with connect(url, api_key) as api:
        dry_run = api.call("POST", f"/automations/{segment(automation)}/trigger", json=body)
        if not wait:
            _emit(dry_run, output)
            return
        typer.echo(f"dry run {dry_run['id']} started", err=True)
        dry_run = wait_for(api, dry_run["id"])
    _emit(dry_run, output)
    _finish(dry_run)


@app.command("show")
def show(
    dry_run_id: DryRunId,
    wait: Wait = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a dry run's progress and counts (needs dry-runs:read)."""
    with connect(url, api_key) as api:
        if wait:
            dry_run = wait_for(api, dry_run_id)
        else:
            dry_run = api.call("GET", f"/dry-runs/{segment(dry_run_id)}")
    _emit(dry_run, output)
    if wait:
        _finish(dry_run)


@app.command("cancel")
def cancel(
    dry_run_id: DryRunId,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Stop a dry run; the results stored so far stay (needs automations:trigger)."""
    with connect(url, api_key) as api:
        dry_run = api.call("POST", f"/dry-runs/{segment(dry_run_id)}/cancel")
    _emit(dry_run, output)


def _server_filters_by_dry_run(api: Api) -> bool:
    """Whether the server's result list takes a ``dry_run_id`` filter (newer servers do).

    An unknown query parameter is refused, so the CLI asks the server's
    OpenAPI document before sending it.
    """
    try:
        schema = api.client.get(f"{api.url}/openapi.json").json()
        get = schema["paths"]["/api/v1/dry-run-results"]["get"]
        return any(p.get("name") == "dry_run_id" for p in get.get("parameters", []))
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return False


@app.command("results")
def results(
    dry_run_id: DryRunId,
    status: Annotated[
        str | None,
        opt("--status", "CONVEYOR_DRY_RUN_RESULT_STATUS", "only success, failed or skipped"),
    ] = None,
    run_at: Annotated[
        str | None,
        opt(
            "--run-at",
            "CONVEYOR_DRY_RUN_RESULT_RUN_AT",
            "only this simulated day, or days FROM..TO",
        ),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List what a dry run found, one result per day and contact (needs dry-runs:read)."""
    filters = {"status": status, "run_at": run_at}
    with connect(url, api_key) as api:
        dry_run = api.call("GET", f"/dry-runs/{segment(dry_run_id)}")
        if _server_filters_by_dry_run(api):
            params = params_of({"dry_run_id": dry_run_id, **filters})
            list_command(
                api,
                "/dry-run-results",
                params,
                limit=limit,
                cursor=cursor,
                all_pages=all_pages,
                output=output,
                columns=_RESULT_COLUMNS,
                noun="results",
            )
            return
        # An older server: its automation's results, kept when they are this dry run's.
        if cursor is not None:
            raise fail("--cursor needs a server that filters results by dry run", 2)
        params = params_of({"automation_id": dry_run["automation_id"], **filters})
        found = [
            item
            for page in api.pages("/dry-run-results", [*params, ("limit", "1000")], None, True)
            for item in page["items"]
            if item["dry_run_id"] == dry_run_id
        ]
    shown = found if all_pages else found[:limit]
    page = {"items": shown, "total": len(found), "limit": limit, "offset": 0, "next_cursor": None}
    emit_page(page, output, _RESULT_COLUMNS, "results")


ResultId = Annotated[str, typer.Argument(metavar="RESULT_ID", help="the result's id")]


@app.command("result")
def result(
    result_id: ResultId,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show one result: what would have happened, step by step (needs dry-runs:read).

    Its fields, then what it found (`result`) as indented JSON; `-o json` is
    the API's answer.
    """
    with connect(url, api_key) as api:
        found = api.call("GET", f"/dry-run-results/{segment(result_id)}")
    if output is not OutputFormat.TABLE:
        emit(found, output, ())
        return
    show_fields(found, skip=("result",))
    typer.echo("")
    typer.echo(to_json(found["result"], indent=2))


@app.command("delete-result")
def delete_result(
    result_id: ResultId,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete one result and its simulated run; a real run is never touched (dry-runs:delete)."""
    with connect(url, api_key) as api:
        api.call("DELETE", f"/dry-run-results/{segment(result_id)}")
    typer.echo(f"deleted dry-run result {result_id}", err=True)
