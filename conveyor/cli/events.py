"""``conveyor events send``: send events to a running server (over the HTTP API).

One event from options (``--name``, ``--id``, ``--identity-email``...), or many
from a file (``-f events.json``; ``-f -`` reads stdin): a JSON event, a JSON
list, ``{"events": [...]}``, or JSON lines. Files are sent in batches of up to
1,000 events; each event gets its own result, and the command exits non-zero
when any event was rejected.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.client import (
    AllPages,
    ApiKey,
    Cursor,
    Limit,
    Url,
    connect,
    json_object,
    list_command,
    params_of,
)
from conveyor.cli.common import Output, OutputFormat, emit, fail, load_json
from conveyor.cli.follow import segment
from conveyor.domain.ids import new_id

app = typer.Typer(help="Send and read events (over the HTTP API).", no_args_is_help=True)

MAX_BATCH = 1000
_COLUMNS = ("index", "id", "status", "contact_id", "runs_started", "reason")
_EVENT_COLUMNS = ("id", "name", "occurred_at", "contact_id")


def _opt(name: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(name, envvar=env, show_envvar=True, help=help_, **kw)


def _read_events(path: str) -> list[dict[str, Any]]:
    """The events in a file: one JSON event, a list, ``{"events": [...]}``, or JSON lines."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    refused = f"{path} holds what the API refuses"
    try:
        data: Any = load_json(text, refused)
    except ValueError:
        data = None
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            data = [load_json(line, f"{refused} (line {n})") for n, line in enumerate(lines, 1)]
        except ValueError as exc:
            raise fail(f"{path} is neither JSON nor JSON lines: {exc}") from None
    if isinstance(data, dict):
        data = data["events"] if "events" in data else [data]
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise fail(f"{path} must hold event objects")
    return data


def _event_from_options(
    name: str | None,
    event_id: str | None,
    identities: dict[str, str | None],
    payload: str | None,
    occurred_at: str | None,
) -> dict[str, Any]:
    if not name:
        raise fail("give --name (or -f FILE)")
    given = {k: v for k, v in identities.items() if v}
    if len(given) > 1:
        raise fail(
            "give at most one of --identity-email, --identity-external-id, --identity-contact-id"
        )
    event: dict[str, Any] = {"id": event_id or new_id(), "name": name}
    if given:
        ((kind, value),) = given.items()
        event["identity"] = {"type": kind, "value": value}
    if payload is not None:
        event["payload"] = json_object(payload, "--payload")
    if occurred_at is not None:
        event["occurred_at"] = occurred_at
    return event


@app.command()
def send(
    name: Annotated[str | None, _opt("--name", "CONVEYOR_EVENT_NAME", "the event's name")] = None,
    event_id: Annotated[
        str | None,
        _opt(
            "--id",
            "CONVEYOR_EVENT_ID",
            "the event's unique id (a new one if left out; give one to make a retry safe)",
        ),
    ] = None,
    identity_email: Annotated[
        str | None,
        _opt("--identity-email", "CONVEYOR_EVENT_IDENTITY_EMAIL", "the contact, by email"),
    ] = None,
    identity_external_id: Annotated[
        str | None,
        _opt(
            "--identity-external-id",
            "CONVEYOR_EVENT_IDENTITY_EXTERNAL_ID",
            "the contact, by your id for it",
        ),
    ] = None,
    identity_contact_id: Annotated[
        str | None,
        _opt("--identity-contact-id", "CONVEYOR_EVENT_IDENTITY_CONTACT_ID", "the contact's id"),
    ] = None,
    payload: Annotated[
        str | None,
        _opt("--payload", "CONVEYOR_EVENT_PAYLOAD", "the payload: a JSON object, or @FILE"),
    ] = None,
    occurred_at: Annotated[
        str | None,
        _opt("--occurred-at", "CONVEYOR_EVENT_OCCURRED_AT", "RFC 3339 time (default: now)"),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            envvar="CONVEYOR_EVENT_FILE",
            show_envvar=True,
            help="send the events in this file (JSON or JSON lines; - for stdin) instead",
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Send one event, or every event of a file, and print each one's result.

    Needs events:write. `-o json` prints the API's answer (`accepted`,
    `duplicates`, `rejected`, `results`; a file sent in several batches, their
    sum); `-o jsonl` one result per line. Exits 1 if any event was rejected.
    """
    if file is not None:
        if name or event_id or payload or occurred_at:
            raise fail("give either -f FILE or the event's options, not both")
        events = _read_events(file)
    else:
        identities = {
            "email": identity_email,
            "external_id": identity_external_id,
            "contact_id": identity_contact_id,
        }
        events = [_event_from_options(name, event_id, identities, payload, occurred_at)]
    total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "rejected": 0, "results": []}
    with connect(url, api_key) as api:
        for start in range(0, len(events), MAX_BATCH):
            batch = events[start : start + MAX_BATCH]
            answer = api.call("POST", "/events", json={"events": batch})
            for name in ("accepted", "duplicates", "rejected"):
                total[name] += answer[name]
            for result in answer["results"]:
                result["index"] += start
                total["results"].append(result)
    _print(total, output)
    if total["rejected"]:
        raise fail(f"{total['rejected']} of {len(total['results'])} events rejected")


def _print(answer: dict[str, Any], output: OutputFormat) -> None:
    results: list[dict[str, Any]] = answer["results"]
    if output is OutputFormat.JSON:
        emit(answer, output, ())
    elif output is OutputFormat.TABLE:
        rows = [
            {
                **r,
                "runs_started": len(r.get("runs_started") or []),
                "reason": r.get("reason") or _trigger_errors(r),
            }
            for r in results
        ]
        emit(rows, output, _COLUMNS)
    else:
        emit(results, output, _COLUMNS)


def _trigger_errors(result: dict[str, Any]) -> str | None:
    errors = result.get("trigger_errors") or []
    if not errors:
        return None
    return "; ".join(f"filter of {e['automation_name']}: {e['detail']}" for e in errors)


@app.command("list")
def list_(
    name: Annotated[str | None, _opt("--name", "CONVEYOR_EVENT_NAME", "only this name")] = None,
    contact_id: Annotated[
        str | None, _opt("--contact-id", "CONVEYOR_EVENT_CONTACT_ID", "only about this contact")
    ] = None,
    occurred_after: Annotated[
        str | None, _opt("--occurred-after", "CONVEYOR_EVENT_OCCURRED_AFTER", "RFC 3339")
    ] = None,
    occurred_before: Annotated[
        str | None, _opt("--occurred-before", "CONVEYOR_EVENT_OCCURRED_BEFORE", "RFC 3339")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List stored events, latest first (needs events:read)."""
    params = params_of(
        {
            "name": name,
            "contact_id": contact_id,
            "occurred_after": occurred_after,
            "occurred_before": occurred_before,
        }
    )
    with connect(url, api_key) as api:
        list_command(
            api,
            "/events",
            params,
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_EVENT_COLUMNS,
            noun="events",
        )


@app.command("show")
def show(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="the id its sender gave it")],
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show one stored event (needs events:read)."""
    with connect(url, api_key) as api:
        event = api.call("GET", f"/events/{segment(event_id)}")
    emit(event, output, tuple(event))
