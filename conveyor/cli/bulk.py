"""``conveyor runs bulk-cancel|bulk-replay|bulk-show``: bulk operations over filtered runs.

A bulk operation runs in the background, on a worker: the commands print it
as the API answers, and with ``--wait`` poll it until it is no longer queued
or running, then exit with its outcome (docs/cli.md, exit codes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from conveyor.cli.client import Api, ApiKey, Url, connect, opt
from conveyor.cli.common import ExitCode, Output, OutputFormat, emit, fail
from conveyor.cli.follow import segment
from conveyor.cli.output import show_fields
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
    bulk_filters,
)

_COLUMNS = ("id", "kind", "status", "matched", "done", "failed", "created_at", "completed_at")
UNFINISHED = frozenset({"queued", "running"})

OperationId = Annotated[str, typer.Argument(metavar="OPERATION_ID", help="the bulk operation's id")]
Reason = Annotated[
    str | None, opt("--reason", "CONVEYOR_RUN_REASON", "why (kept in each run's history)")
]
Wait = Annotated[
    bool,
    opt(
        "--wait",
        "CONVEYOR_BULK_WAIT",
        "wait until every matched run is handled; exit with the outcome",
    ),
]


def outcome(operation: Mapping[str, Any]) -> ExitCode:
    """How a command that waited ends: 0 all handled, 4 some runs not, 3 the operation failed."""
    if operation["status"] == "failed":
        return ExitCode.RUN_FAILED
    return ExitCode.RUN_COMPLETED_WITH_ERRORS if operation["failed"] else ExitCode.OK


def _emit(operation: Mapping[str, Any], output: OutputFormat) -> None:
    if output is not OutputFormat.TABLE:
        emit(operation, output, ())
        return
    show_fields({c: operation.get(c) for c in _COLUMNS})
    for error in operation.get("errors") or []:
        typer.echo(f"  {error.get('run_id')}: {error.get('code')}: {error.get('detail')}")


def wait_for(api: Api, operation_id: str) -> dict[str, Any]:
    """Poll the operation until it is neither queued nor running."""
    delay = 0.1
    try:
        while True:
            operation: dict[str, Any] = api.call("GET", f"/bulk-operations/{segment(operation_id)}")
            if operation["status"] not in UNFINISHED:
                return operation
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    except KeyboardInterrupt:
        raise fail(
            f"stopped waiting; bulk operation {operation_id} goes on "
            f"(`conveyor runs bulk-show {operation_id}` shows its progress)",
            130,
        ) from None


def _finish(operation: Mapping[str, Any]) -> None:
    code = outcome(operation)
    if code is not ExitCode.OK:
        typer.echo(
            f"bulk operation {operation['id']} ended {operation['status']}: "
            f"{operation['done']} of {operation['matched']} runs handled, "
            f"{operation['failed']} not",
            err=True,
        )
        raise typer.Exit(code)


def _start(
    kind: str,
    body: dict[str, Any],
    wait: bool,
    url: str | None,
    api_key: str | None,
    output: OutputFormat,
) -> None:
    with connect(url, api_key) as api:
        operation = api.call("POST", f"/runs/bulk/{kind}", json=body)
        if wait:
            typer.echo(f"bulk {kind} {operation['id']} started", err=True)
            operation = wait_for(api, operation["id"])
    _emit(operation, output)
    if wait:
        _finish(operation)


def bulk_cancel(
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
    reason: Reason = None,
    wait: Wait = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Cancel every pending, running or waiting run the filters match (needs runs:write).

    No filter: every such run of the tenant. Only runs created before the
    request are considered. Prints the bulk operation; with --wait (also
    runs:read) waits for its end and exits 0 when every run was cancelled,
    4 when some could not be, 3 when the operation failed.
    """
    filters = bulk_filters(
        automation,
        status=status,
        trigger_type=trigger_type,
        trigger_source_type=trigger_source_type,
        contact_id=contact_id,
        identity=identity,
        concurrency_key=concurrency_key,
        retry_of=retry_of,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
    )
    _start("cancel", {"filters": filters, "reason": reason}, wait, url, api_key, output)


def bulk_replay(
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
    resend: Annotated[
        bool, opt("--resend", "CONVEYOR_RETRY_RESEND", "re-send messages already delivered")
    ] = False,
    reason: Reason = None,
    wait: Wait = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Replay every finished run the filters match that did not complete (runs:write).

    The runs replayed are those failed, exhausted, timed out, cancelled or
    completed with errors. Each replay is a new run, as `runs replay` makes.
    Only runs created before
    the request are considered. Prints the bulk operation; --wait as in
    bulk-cancel.
    """
    filters = bulk_filters(
        automation,
        status=status,
        trigger_type=trigger_type,
        trigger_source_type=trigger_source_type,
        contact_id=contact_id,
        identity=identity,
        concurrency_key=concurrency_key,
        retry_of=retry_of,
        tag=tag,
        created_after=created_after,
        created_before=created_before,
    )
    body = {"filters": filters, "reason": reason, "resend": resend}
    _start("replay", body, wait, url, api_key, output)


def bulk_show(
    operation_id: OperationId,
    wait: Wait = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a bulk operation's progress: matched, done, failed, the first errors (runs:read)."""
    with connect(url, api_key) as api:
        if wait:
            operation = wait_for(api, operation_id)
        else:
            operation = api.call("GET", f"/bulk-operations/{segment(operation_id)}")
    _emit(operation, output)
    if wait:
        _finish(operation)
