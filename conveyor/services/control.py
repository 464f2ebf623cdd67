"""Run control use cases: cancel, retry, replay, bulk operations (one transaction each)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection

from conveyor.domain.errors import Forbidden, NotFound
from conveyor.domain.run_filters import RunFilters, check_payload_window
from conveyor.domain.scopes import Scope
from conveyor.engine import bulk
from conveyor.engine.control import Actor, RetryMode, cancel_run, retry_run
from conveyor.services import run_lists
from conveyor.services.keys import Principal
from conveyor.services.runs import run_summary
from conveyor.store import bulk as bulk_store


class BulkOperationNotFound(NotFound):
    """The bulk operation was not found."""

    code = "bulk_operation_not_found"


def actor_of(principal: Principal) -> Actor:
    """The acting API key, as run histories record it."""
    return Actor(kind="api_key", id=principal.key_id, label=principal.label)


def cancel(
    conn: Connection, principal: Principal, run_id: str, *, reason: str | None, now: datetime
) -> dict[str, Any]:
    """Cancel a run; return its summary."""
    run = cancel_run(
        conn, principal.tenant_id, run_id, actor=actor_of(principal), reason=reason, now=now
    )
    return run_summary(run)


def retry(
    conn: Connection,
    principal: Principal,
    run_id: str,
    *,
    mode: RetryMode,
    step_key: str | None,
    payload: Mapping[str, Any] | None,
    version: Literal["original", "latest"],
    resend: bool,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Retry a run as a new run; return the new run's summary.

    A retry with a new ``payload`` or the ``latest`` version is a new start of
    the automation with input of the caller's choosing, so it also needs
    ``automations:trigger`` (a plain retry re-runs what already ran).
    """
    if (payload is not None or version == "latest") and not principal.has(
        Scope.AUTOMATIONS_TRIGGER
    ):
        raise Forbidden(
            "a retry with a new `payload` or `version: latest` starts the automation anew: "
            f"this API key lacks the scope `{Scope.AUTOMATIONS_TRIGGER.value}`"
        )
    run = retry_run(
        conn,
        principal.tenant_id,
        run_id,
        mode=mode,
        step_key=step_key,
        payload=payload,
        version=version,
        resend=resend,
        reason=reason,
        actor=actor_of(principal),
        now=now,
    )
    return run_summary(run)


def start_bulk(
    conn: Connection,
    principal: Principal,
    kind: bulk.BulkKind,
    filters: RunFilters,
    *,
    arguments: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Queue a bulk cancel or replay; return the operation.

    A payload filter on SQLite needs a start time, as in the run lists.
    """
    check_payload_window(filters, conn.dialect.name)
    operation_id = bulk.request(
        conn,
        principal.tenant_id,
        kind,
        filters,
        arguments=arguments,
        actor=actor_of(principal),
        now=now,
    )
    return get_bulk(conn, principal.tenant_id, operation_id)


def bulk_count(
    conn: Connection,
    tenant_id: str,
    kind: bulk.BulkKind,
    filters: RunFilters,
    now: datetime,
    *,
    cap: int | None = None,
    listed: tuple[int, bool] | None = None,
) -> tuple[int, bool]:
    """How many runs a bulk operation over ``filters`` would act on now, and whether exactly.

    What a confirmation names before the operation is asked for; it counts
    like the run list, exactly up to ``cap`` (the list's ``TOTAL_CAP`` unless
    given) and a lower bound past it.
    ``listed`` is the list's own count of ``filters`` (total, exact), if the
    caller has it: when the operation would not narrow the statuses, the
    count is the same and is not made again.
    """
    try:
        scoped = bulk.scope_filters(kind, filters, now)
    except bulk.InvalidBulkFilters:
        return 0, True
    if listed is not None and filters.status and set(scoped.status) == set(filters.status):
        total, exact = listed
        limit = run_lists.TOTAL_CAP if cap is None else cap
        return (total, exact) if exact and total <= limit else (limit, False)
    page = run_lists.list_runs(conn, tenant_id, scoped, limit=1, count_cap=cap)
    return int(page["total"]), bool(page["total_exact"])


def get_bulk(conn: Connection, tenant_id: str, operation_id: str) -> dict[str, Any]:
    """A bulk operation's progress."""
    op = bulk_store.get_operation(conn, operation_id, tenant_id)
    if op is None:
        raise BulkOperationNotFound(f"bulk operation {operation_id} not found")
    return bulk.operation_view(op)
