"""``conveyor runs``: list, show, follow, cancel, retry and replay runs of a running server.

These commands speak HTTP to the API (``--url``, ``--api-key``) rather than opening
the database, so they work against any server, local or remote, with a key's scopes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from conveyor.cli.common import Output, OutputFormat, emit, fail, load_json

app = typer.Typer(
    help="List, inspect, follow, cancel, retry and replay runs (over the HTTP API).",
    no_args_is_help=True,
)

_RUN_COLUMNS = (
    "id",
    "automation_name",
    "status",
    "trigger_type",
    "created_at",
    "duration_seconds",
)
_STEP_COLUMNS = ("key", "type", "status", "attempt_count", "branch_taken", "duration_seconds")
_EVENT_COLUMNS = ("seq", "created_at", "type", "step_key", "data")
_TERMINAL = frozenset(
    f"run.{s}"
    for s in ("completed", "completed-with-errors", "failed", "exhausted", "timed-out", "cancelled")
)
# How often `events --follow` reconnects after losing the stream mid-run.
_RECONNECTS = 5


def _opt(name: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(name, envvar=env, show_envvar=True, help=help_, **kw)


Url = Annotated[
    str, _opt("--url", "CONVEYOR_URL", "base URL of the Conveyor server", show_default=True)
]
ApiKey = Annotated[
    str | None,
    _opt("--api-key", "CONVEYOR_API_KEY", "API key (needs runs:read; runs:write to change runs)"),
]
RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="the run's id")]
Reason = Annotated[
    str | None, _opt("--reason", "CONVEYOR_RUN_REASON", "why (kept in the run's history)")
]
DEFAULT_URL = "http://127.0.0.1:8000"


class _Api:
    """A small HTTP client for ``/api/v1`` that turns problems into CLI failures."""

    def __init__(self, url: str, api_key: str | None) -> None:
        if not api_key:
            raise fail("an API key is required: pass --api-key or set CONVEYOR_API_KEY")
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "conveyor-cli"},
            timeout=httpx.Timeout(30.0, read=None),
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.url}: {exc}") from None
        self.check(response)
        return response.json()

    @staticmethod
    def check(response: httpx.Response) -> None:
        """Fail with the problem's detail (and each invalid input) on an error status."""
        if not response.is_error:
            return
        response.read()
        try:
            problem = response.json()
            detail = str(problem.get("detail") or problem)
            errors = problem.get("errors") or []
        except ValueError:
            problem, detail, errors = {}, response.text or response.reason_phrase, []
        code = problem.get("code") if isinstance(problem, dict) else None
        lines = [f"{detail} ({response.status_code}{', ' + code if code else ''})"]
        lines += [f"  {'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in errors]
        raise fail("\n".join(lines))


@contextmanager
def _api(url: str, api_key: str | None) -> Iterator[_Api]:
    api = _Api(url, api_key)
    try:
        yield api
    finally:
        api.client.close()


def _emit_run(run: Mapping[str, Any], output: OutputFormat) -> None:
    emit(run, output, _RUN_COLUMNS)


@app.command("list")
def list_(
    status: Annotated[
        list[str] | None,
        _opt("--status", "CONVEYOR_RUN_STATUS", "only these statuses (repeatable)"),
    ] = None,
    automation: Annotated[
        str | None,
        _opt("--automation", "CONVEYOR_RUN_AUTOMATION", "only this automation (id or name)"),
    ] = None,
    trigger_type: Annotated[
        str | None, _opt("--trigger-type", "CONVEYOR_RUN_TRIGGER_TYPE", "manual, event, ...")
    ] = None,
    trigger_source_type: Annotated[
        str | None,
        _opt("--trigger-source-type", "CONVEYOR_RUN_TRIGGER_SOURCE_TYPE", "user, api_key, ..."),
    ] = None,
    contact_id: Annotated[
        str | None, _opt("--contact-id", "CONVEYOR_RUN_CONTACT_ID", "only this contact's runs")
    ] = None,
    identity: Annotated[
        str | None, _opt("--identity", "CONVEYOR_RUN_IDENTITY", "only this identity value")
    ] = None,
    concurrency_key: Annotated[
        str | None, _opt("--concurrency-key", "CONVEYOR_RUN_CONCURRENCY_KEY", "only this key")
    ] = None,
    retry_of: Annotated[
        str | None, _opt("--retry-of", "CONVEYOR_RUN_RETRY_OF", "only retries of this run")
    ] = None,
    tag: Annotated[str | None, _opt("--tag", "CONVEYOR_RUN_TAG", "only runs with this tag")] = None,
    created_after: Annotated[
        str | None,
        _opt(
            "--created-after", "CONVEYOR_RUN_CREATED_AFTER", "RFC 3339, e.g. 2026-03-01T00:00:00Z"
        ),
    ] = None,
    created_before: Annotated[
        str | None, _opt("--created-before", "CONVEYOR_RUN_CREATED_BEFORE", "RFC 3339")
    ] = None,
    dry_run: Annotated[
        bool, _opt("--dry-run", "CONVEYOR_RUN_DRY_RUN", "list dry-run records instead")
    ] = False,
    limit: Annotated[
        int, _opt("--limit", "CONVEYOR_RUN_LIMIT", "page size (1-1000)", min=1, max=1000)
    ] = 100,
    cursor: Annotated[
        str | None, _opt("--cursor", "CONVEYOR_RUN_CURSOR", "continue after this page cursor")
    ] = None,
    all_pages: Annotated[
        bool, _opt("--all", "CONVEYOR_RUN_ALL", "follow the cursor through every page")
    ] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List runs, newest first, with the API's filters."""
    params: list[tuple[str, str]] = [("status", s) for s in status or ()]
    named = {
        "trigger_type": trigger_type,
        "trigger_source_type": trigger_source_type,
        "contact_id": contact_id,
        "identity": identity,
        "concurrency_key": concurrency_key,
        "retry_of": retry_of,
        "tag": tag,
        "created_after": created_after,
        "created_before": created_before,
    }
    params += [(k, v) for k, v in named.items() if v is not None]
    params += [("limit", str(limit))] + ([("dry_run", "true")] if dry_run else [])
    path = f"/automations/{automation}/runs" if automation else "/runs"
    items: list[dict[str, Any]] = []
    with _api(url, api_key) as api:
        while True:
            page = api.call("GET", path, params=params + ([("cursor", cursor)] if cursor else []))
            if output is OutputFormat.JSONL:
                emit(page["items"], output, ())  # as they come: --all may be long
            items += page["items"]
            cursor = page["next_cursor"]
            if not all_pages or cursor is None:
                break
    if output is OutputFormat.JSON:
        emit(page if not all_pages else {"items": items, "total": len(items)}, output, ())
    elif output is OutputFormat.TABLE:
        emit(items, output, _RUN_COLUMNS)
        total = f"{page['total']:,}{'' if page.get('total_exact', True) else '+'}"
        more = f"; next page: --cursor {cursor}" if cursor else ""
        typer.echo(f"{len(items)} of {total} runs{more}", err=True)


@app.command("show")
def show(
    run_id: RunId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a run: its summary, trigger event, steps and last error."""
    with _api(url, api_key) as api:
        run = api.call("GET", f"/runs/{run_id}")
    if output is not OutputFormat.TABLE:
        emit(run, output, ())
        return
    width = max(len(k) for k in run)
    for key, value in run.items():
        if key not in ("steps", "trigger_event"):
            shown = json.dumps(value) if isinstance(value, dict | list) else value
            typer.echo(f"{key.ljust(width)}  {'-' if value is None else shown}")
    typer.echo(f"{'trigger_event'.ljust(width)}  {json.dumps(run.get('trigger_event'))}")
    typer.echo("")
    emit(run.get("steps", []), output, _STEP_COLUMNS)


def _event_line(event: Mapping[str, Any], output: OutputFormat) -> str:
    if output is not OutputFormat.TABLE:
        return json.dumps(event)
    step = event.get("step_key") or "-"
    data = json.dumps(event.get("data") or {})
    return f"{event['seq']:>5}  {event['created_at']}  {event['type']:<24} {step:<16} {data}"


def _sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a server-sent event stream, each as the JSON of its data."""
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        # `id:` and `event:` repeat what the data holds (seq, type); `:` lines keep alive.


def _follow(api: _Api, run_id: str, output: OutputFormat) -> None:
    """Print the run's history as it is written; return after its terminal event."""
    last_seq = 0
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_seq:
            headers["Last-Event-ID"] = str(last_seq)
        try:
            with api.client.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
                api.check(response)
                for event in _sse(response):
                    last_seq = int(event["seq"])
                    failures = 0
                    typer.echo(_event_line(event, output))
                    if event["type"] in _TERMINAL:
                        return
            return  # the server ended the stream: the run is over
        except httpx.HTTPError as exc:
            # A dropped connection is resumed after the last event seen.
            failures += 1
            if failures > _RECONNECTS:
                raise fail(f"lost the event stream from {api.url}: {exc}") from None
            time.sleep(min(2.0**failures / 4, 5.0))


@app.command("events")
def events(
    run_id: RunId,
    follow: Annotated[
        bool,
        _opt(
            "--follow",
            "CONVEYOR_RUN_FOLLOW",
            "stream new events as they happen, until the run ends",
        ),
    ] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Print a run's history (`--follow`: live, until the run ends)."""
    with _api(url, api_key) as api:
        if follow:
            _follow(api, run_id, output)
            return
        items: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = api.call("GET", f"/runs/{run_id}/events", params={"after": after, "limit": 1000})
            items += page["items"]
            after = page.get("next_after")
    if output is OutputFormat.TABLE:
        for event in items:
            typer.echo(_event_line(event, output))
    else:
        emit(items, output, _EVENT_COLUMNS)


@app.command("cancel")
def cancel(
    run_id: RunId,
    reason: Reason = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Cancel a pending, running or waiting run."""
    with _api(url, api_key) as api:
        run = api.call("POST", f"/runs/{run_id}/cancel", json={"reason": reason})
    _emit_run(run, output)


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
        return load_json(raw, "--payload holds what the API refuses")
    except OSError as exc:
        raise fail(f"cannot read {text[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"--payload is not valid JSON: {exc}") from None


@app.command("retry")
def retry(
    run_id: RunId,
    mode: Annotated[
        str, _opt("--mode", "CONVEYOR_RETRY_MODE", "from_failed, from_step or full")
    ] = "from_failed",
    step: Annotated[
        str | None, _opt("--step", "CONVEYOR_RETRY_STEP", "the step to re-run from (from_step)")
    ] = None,
    payload: Annotated[
        str | None,
        _opt("--payload", "CONVEYOR_RETRY_PAYLOAD", "new payload as JSON, or @FILE (full)"),
    ] = None,
    version: Annotated[
        str, _opt("--version", "CONVEYOR_RETRY_VERSION", "original or latest definition")
    ] = "original",
    resend: Annotated[
        bool, _opt("--resend", "CONVEYOR_RETRY_RESEND", "re-send messages already delivered")
    ] = False,
    reason: Reason = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Retry a run as a new run linked to it by `retry_of`."""
    body: dict[str, Any] = {"mode": mode, "version": version, "resend": resend, "reason": reason}
    if step is not None:
        body["step_key"] = step
    if payload is not None:
        body["payload"] = _payload(payload)
    with _api(url, api_key) as api:
        run = api.call("POST", f"/runs/{run_id}/retry", json=body)
    _emit_run(run, output)


@app.command("replay")
def replay(
    run_id: RunId,
    resend: Annotated[
        bool, _opt("--resend", "CONVEYOR_RETRY_RESEND", "re-send messages already delivered")
    ] = False,
    reason: Reason = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Replay a run: a new run that resumes at the failed steps and reuses the rest."""
    with _api(url, api_key) as api:
        run = api.call("POST", f"/runs/{run_id}/replay", json={"resend": resend, "reason": reason})
    _emit_run(run, output)
