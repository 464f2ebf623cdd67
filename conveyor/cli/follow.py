"""Following a run to its end (``trigger --wait/--follow``, ``runs events --follow``).

A command that waits for a run ends with the run's outcome as its exit code
(``STATUS_EXIT``): 0 only when the run completed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import typer

from conveyor.cli.client import Api
from conveyor.cli.common import STATUS_EXIT, ExitCode, fail
from conveyor.cli.output import (
    OutputFormat,
    cell,
    emit,
    fit_text,
    print_table,
    show_fields,
    table_cell,
    terminal_width,
    to_json,
)

RUN_COLUMNS = ("id", "status", "automation_name", "created_at", "duration_seconds", "trigger_type")
STEP_COLUMNS = ("key", "type", "status", "attempt_count", "branch_taken", "duration_seconds")
# How often a follower reconnects after losing the stream mid-run.
RECONNECTS = 5


def segment(value: str) -> str:
    """``value`` as one path segment (a name with ``/`` or ``?`` stays one)."""
    return quote(value, safe="")


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
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


def _terminal(event: Mapping[str, Any]) -> str | None:
    status = str(event.get("type", "")).removeprefix("run.")
    return status if status in STATUS_EXIT else None


def follow_run(api: Api, run_id: str, on_event: Callable[[dict[str, Any]], None]) -> str:
    """Pass each line of the run's history to ``on_event`` as it is written; return its end.

    A dropped connection is resumed after the last line seen (``Last-Event-ID``).
    """
    last_seq = 0
    failures = 0
    path = f"/runs/{segment(run_id)}/events"
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_seq:
            headers["Last-Event-ID"] = str(last_seq)
        try:
            with api.client.stream("GET", path, headers=headers) as response:
                api.check(response)
                for event in sse(response):
                    last_seq = int(event["seq"])
                    failures = 0
                    on_event(event)
                    status = _terminal(event)
                    if status is not None:
                        return status
            # The server ended the stream: the run is over (its end was sent earlier).
            run = api.call("GET", f"/runs/{segment(run_id)}")
            if run["status"] in STATUS_EXIT:
                return str(run["status"])
        except httpx.HTTPError as exc:
            failures += 1
            if failures > RECONNECTS:
                raise fail(f"lost the event stream from {api.url}: {exc}") from None
            time.sleep(min(2.0**failures / 4, 5.0))


@contextmanager
def interruptible(run_id: str) -> Iterator[None]:
    """Ctrl-C while waiting stops the waiting, not the run: say so, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail(
            f"stopped waiting; run {run_id} goes on (`conveyor runs cancel {run_id}` stops it)",
            130,
        ) from None


def _compact(data: Mapping[str, Any]) -> str:
    """A history line's data as ``name=value`` pairs (nested values as JSON)."""
    return " ".join(f"{k}={v if isinstance(v, str) else to_json(v)}" for k, v in data.items())


def event_line(event: Mapping[str, Any], output: OutputFormat) -> str:
    """One history line: JSON, or for people a line that fits the terminal.

    Sequence number, time (UTC: month-day and time to the second), type, step,
    then the data as ``name=value``, cut with an ellipsis if the line would be
    too long (``-o json`` has it whole).
    """
    if output is not OutputFormat.TABLE:
        return to_json(event)
    when = table_cell("created_at", event.get("created_at"))[5:]
    step = fit_text(cell(event.get("step_key")), 12)
    head = f"{event['seq']:>5}  {when}  {event['type']:<16}  {step:<12}  "
    data = _compact(event.get("data") or {})
    return (head + fit_text(data, max(terminal_width() - len(head), 12))).rstrip()


def show_run(run: Mapping[str, Any], output: OutputFormat) -> None:
    """A run's detail: its fields and a table of its steps (or the API's JSON)."""
    if output is not OutputFormat.TABLE:
        emit(run, output, ())
        return
    show_fields(run, skip=("steps",))
    typer.echo("")
    print_table(run.get("steps", []), STEP_COLUMNS)


def finish(run_id: str, status: str) -> None:
    """End the command with the run's outcome: say so on stderr unless it completed."""
    code = STATUS_EXIT[status]
    if code is not ExitCode.OK:
        typer.echo(f"run {run_id} ended {status}", err=True)
        raise typer.Exit(code)
