"""``conveyor runs``: list, show, follow, cancel, retry and replay runs of a running server.

Also a run's steps and a step's whole output; the bulk commands are in
``conveyor.cli.bulk``, registered here.

These commands speak HTTP to the API (``--url``, ``--api-key``, or the
configuration file) rather than opening the database, so they work against any
server, local or remote, with a key's scopes.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli import bulk
from conveyor.cli.client import ApiKey, Url, connect, json_object, list_command, opt, params_of
from conveyor.cli.common import Output, OutputFormat, emit
from conveyor.cli.follow import (
    RUN_COLUMNS,
    STEP_COLUMNS,
    event_line,
    finish,
    follow_run,
    interruptible,
    segment,
    show_run,
)
from conveyor.cli.output import print_table, show_fields, to_json
from conveyor.cli.run_filters import (
    Automation,
    ConcurrencyKey,
    ContactId,
    CreatedAfter,
    CreatedBefore,
    Identity,
    RetryOf,
    Status,
    Tag,
    TriggerSourceType,
    TriggerType,
)

app = typer.Typer(
    help="List, inspect, follow, cancel, retry and replay runs, one by one or in bulk "
    "(over the HTTP API).",
    no_args_is_help=True,
)

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="the run's id")]
Reason = Annotated[
    str | None, opt("--reason", "CONVEYOR_RUN_REASON", "why (kept in the run's history)")
]


@app.command("list")
def list_(
    status: Status = None,
    automation: Automation = None,
    trigger_type: TriggerType = None,
    trigger_source_type: TriggerSourceType = None,
    contact_id: ContactId = None,
    identity: Identity = None,
    concurrency_key: ConcurrencyKey = None,
    retry_of: RetryOf = None,
    tag: Tag = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    dry_run: Annotated[
        bool, opt("--dry-run", "CONVEYOR_RUN_DRY_RUN", "list dry-run records instead")
    ] = False,
    limit: Annotated[
        int, opt("--limit", "CONVEYOR_RUN_LIMIT", "page size (1-1000)", min=1, max=1000)
    ] = 100,
    cursor: Annotated[
        str | None, opt("--cursor", "CONVEYOR_RUN_CURSOR", "continue after this page cursor")
    ] = None,
    all_pages: Annotated[
        bool, opt("--all", "CONVEYOR_RUN_ALL", "follow the cursor through every page")
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List runs, newest first, with the API's filters (needs runs:read)."""
    params = params_of(
        {
            "status": status or None,
            "trigger_type": trigger_type,
            "trigger_source_type": trigger_source_type,
            "contact_id": contact_id,
            "identity": identity,
            "concurrency_key": concurrency_key,
            "retry_of": retry_of,
            "tag": tag,
            "created_after": created_after,
            "created_before": created_before,
            "dry_run": True if dry_run else None,
        }
    )
    path = f"/automations/{segment(automation)}/runs" if automation else "/runs"
    with connect(url, api_key) as api:
        list_command(
            api,
            path,
            params,
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=RUN_COLUMNS,
            noun="runs",
        )


@app.command("show")
def show(
    run_id: RunId,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a run: its summary, trigger event, steps and last error."""
    with connect(url, api_key) as api:
        run = api.call("GET", f"/runs/{segment(run_id)}")
    show_run(run, output)


@app.command("steps")
def steps(
    run_id: RunId,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List a run's steps in definition order, with their status counts (needs runs:read).

    A table of the steps, and the counts on stderr; `-o json` is the API's
    answer (`steps`, `counts`, ...), `-o jsonl` one step per line.
    """
    with connect(url, api_key) as api:
        overview = api.call("GET", f"/runs/{segment(run_id)}/steps")
    if output is OutputFormat.JSONL:
        emit(overview["steps"], output, ())
    elif output is OutputFormat.JSON:
        emit(overview, output, ())
    else:
        print_table(overview["steps"], STEP_COLUMNS)
        counts = ", ".join(f"{n} {status}" for status, n in overview["counts"].items() if n)
        typer.echo(f"run {overview['run_id']} {overview['run_status']}: {counts}", err=True)


@app.command("output")
def output_(
    run_id: RunId,
    step_key: Annotated[str, typer.Argument(metavar="STEP_KEY", help="the step's key")],
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Print a step's whole output, however large (needs runs:read).

    Run views cut outputs at the server's inline limit; this never does.
    A step that has not completed has no output (exit 1, output_not_available).
    """
    with connect(url, api_key) as api:
        found = api.call("GET", f"/runs/{segment(run_id)}/steps/{segment(step_key)}/output")
    if output is not OutputFormat.TABLE:
        emit(found, output, ())
        return
    show_fields(found, skip=("result",))
    typer.echo("")
    typer.echo(to_json(found["result"], indent=2))


@app.command("events")
def events(
    run_id: RunId,
    follow: Annotated[
        bool,
        opt(
            "--follow",
            "CONVEYOR_RUN_FOLLOW",
            "stream new events as they happen until the run ends; exit with its outcome",
        ),
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Print a run's history (`--follow`: live, until the run ends).

    With --follow the exit code is the run's outcome: 0 completed, 3 failed,
    exhausted or timed out, 4 completed with errors, 5 cancelled; every format
    prints one line per event, as it comes.
    """
    with connect(url, api_key) as api:
        if follow:
            with interruptible(run_id):
                status = follow_run(api, run_id, lambda e: typer.echo(event_line(e, output)))
            finish(run_id, status)
            return
        items: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = api.call(
                "GET", f"/runs/{segment(run_id)}/events", params={"after": after, "limit": 1000}
            )
            items += page["items"]
            after = page.get("next_after")
    if output is OutputFormat.TABLE:
        for event in items:
            typer.echo(event_line(event, output))
    elif output is OutputFormat.JSON:
        emit({"items": items, "next_after": None}, output, ())
    else:
        emit(items, output, ())


@app.command("cancel")
def cancel(
    run_id: RunId,
    reason: Reason = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Cancel a pending, running or waiting run (needs runs:write)."""
    with connect(url, api_key) as api:
        run = api.call("POST", f"/runs/{segment(run_id)}/cancel", json={"reason": reason})
    emit(run, output, RUN_COLUMNS)


@app.command("retry")
def retry(
    run_id: RunId,
    mode: Annotated[
        str, opt("--mode", "CONVEYOR_RETRY_MODE", "from_failed, from_step or full")
    ] = "from_failed",
    step: Annotated[
        str | None, opt("--step", "CONVEYOR_RETRY_STEP", "the step to re-run from (from_step)")
    ] = None,
    payload: Annotated[
        str | None,
        opt("--payload", "CONVEYOR_RETRY_PAYLOAD", "new payload as JSON, or @FILE (full)"),
    ] = None,
    version: Annotated[
        str, opt("--version", "CONVEYOR_RETRY_VERSION", "original or latest definition")
    ] = "original",
    resend: Annotated[
        bool, opt("--resend", "CONVEYOR_RETRY_RESEND", "re-send messages already delivered")
    ] = False,
    reason: Reason = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Retry a run as a new run linked to it by `retry_of` (needs runs:write)."""
    body: dict[str, Any] = {"mode": mode, "version": version, "resend": resend, "reason": reason}
    if step is not None:
        body["step_key"] = step
    if payload is not None:
        body["payload"] = json_object(payload, "--payload")
    with connect(url, api_key) as api:
        run = api.call("POST", f"/runs/{segment(run_id)}/retry", json=body)
    emit(run, output, RUN_COLUMNS)


@app.command("replay")
def replay(
    run_id: RunId,
    resend: Annotated[
        bool, opt("--resend", "CONVEYOR_RETRY_RESEND", "re-send messages already delivered")
    ] = False,
    reason: Reason = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Replay a run: a new run that resumes at the failed steps and reuses the rest."""
    with connect(url, api_key) as api:
        run = api.call(
            "POST", f"/runs/{segment(run_id)}/replay", json={"resend": resend, "reason": reason}
        )
    emit(run, output, RUN_COLUMNS)


# Registered last, so that `runs --help` lists them after the commands on one run.
app.command("bulk-cancel")(bulk.bulk_cancel)
app.command("bulk-replay")(bulk.bulk_replay)
app.command("bulk-show")(bulk.bulk_show)
