"""Creating runs: the one place a run, its steps, first event and task are written.

Used by manual triggers, events, schedules, retries and replays, bulk
operations, child runs and the automation-failure trigger. No user code runs
here (it is called inside write transactions): a concurrency key is either
evaluated by the caller beforehand (``concurrency_key``, outside any
transaction) and given in ``Launch.concurrency_key``, or left for the run's
first round to evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import (
    ConveyorError,
    ExpressionError,
    ExpressionTimeout,
    ExpressionTooLarge,
)
from conveyor.domain.expressions import evaluate
from conveyor.domain.ids import new_id
from conveyor.domain.status import RunStatus, StepStatus
from conveyor.domain.times import iso
from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store
from conveyor.store.definitions import LoadedDefinition


class InvalidConcurrencyKey(ConveyorError):
    """The automation's concurrency key could not be evaluated for this trigger."""

    code = "invalid_concurrency_key"


@dataclass
class Launch:
    """Everything that says why and how a run starts."""

    trigger_type: str
    source_type: str
    source_id: str | None
    trigger_event: Mapping[str, Any]
    identity: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    retry_of: str | None = None
    root_run_id: str | None = None  # the first run of a retry lineage
    resend: bool = False
    contact_id: str | None = None
    parent_run_id: str | None = None
    # step key -> the original step row whose result the new run reuses
    reused: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    created_data: Mapping[str, Any] = field(default_factory=dict)
    # Evaluated by the caller outside the transaction; None: the first round does.
    concurrency_key: str | None = None


def concurrency_key(
    loaded: LoadedDefinition,
    trigger_event: Mapping[str, Any],
    identity: Mapping[str, Any] | None,
) -> str | None:
    """Evaluate the automation's concurrency key expression for a trigger (user code).

    Runs under the budget in force, or a fresh one. Never inside a transaction.

    Raises:
        InvalidConcurrencyKey: it does not evaluate (``ExpressionTimeout`` and
            ``ExpressionTooLarge`` propagate with their own codes).
    """
    conc = loaded.definition.concurrency
    if conc is None:
        return None
    scope = {"trigger": dict(trigger_event), "identity": identity, "contact": None}
    try:
        value = evaluate(conc.key, scope)
    except (ExpressionTimeout, ExpressionTooLarge):
        raise
    except ExpressionError as exc:
        raise InvalidConcurrencyKey(f"concurrency key {conc.key!r}: {exc.detail}") from exc
    return None if value is None else str(value)


def _step_row(
    tenant_id: str,
    run_id: str,
    position: int,
    key: str,
    step_type: str,
    reused: Mapping[str, Any] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id(),
        "tenant_id": tenant_id,
        "run_id": run_id,
        "step_key": key,
        "step_type": step_type,
        "position": position,
        "status": StepStatus.PENDING,
        "branch_taken": None,
        "halted": False,
        "output": None,
        "output_size": None,
        "reused_from": None,
        "started_at": None,
        "completed_at": None,
    }
    if reused is not None:
        row.update(
            status=StepStatus.COMPLETED,
            branch_taken=reused["branch_taken"],
            halted=bool(reused["halted"]),
            output=reused["output"],
            output_size=reused["output_size"],
            reused_from=reused["id"],
            started_at=reused["started_at"],
            completed_at=reused["completed_at"],
        )
    return row


def create_run(
    conn: Connection,
    *,
    tenant_id: str,
    automation: Mapping[str, Any] | RowMapping,
    loaded: LoadedDefinition,
    launch: Launch,
    now: datetime,
) -> dict[str, Any] | None:
    """Insert a pending run and queue it; None if its idempotency key was taken.

    Returns the new run row as a dict.
    """
    run_id = new_id()
    identity = dict(launch.identity) if launch.identity else None
    run: dict[str, Any] = {
        "id": run_id,
        "tenant_id": tenant_id,
        "automation_id": automation["id"],
        "automation_name": automation["name"],
        "version_id": loaded.version_id,
        "version_number": loaded.version,
        "status": RunStatus.PENDING,
        "trigger_type": launch.trigger_type,
        "trigger_source_type": launch.source_type,
        "trigger_source_id": launch.source_id,
        "trigger_event": dict(launch.trigger_event),
        "identity": identity,
        "identity_value": str(identity["value"]) if identity and "value" in identity else None,
        "contact_id": launch.contact_id,
        "concurrency_key": launch.concurrency_key,
        "idempotency_key": launch.idempotency_key,
        "retry_of": launch.retry_of,
        "root_run_id": launch.root_run_id,
        "resend": launch.resend,
        "parent_run_id": launch.parent_run_id,
        "dry_run": False,
        "error": None,
        "event_seq": 0,
        "created_at": now,
        "started_at": None,
        "completed_at": None,
        "updated_at": now,
        "timeout_at": None,
    }
    steps = [
        _step_row(tenant_id, run_id, i, s.key, s.type, launch.reused.get(s.key))
        for i, s in enumerate(loaded.definition.steps)
    ]
    events: list[dict[str, Any]] = [
        {
            "type": "run.created",
            "step_key": None,
            "data": {
                "trigger_type": launch.trigger_type,
                "source_type": launch.source_type,
                "source_id": launch.source_id,
                **launch.created_data,
            },
        }
    ]
    for key, original in launch.reused.items():
        events.append(
            {
                "type": "step.reused",
                "step_key": key,
                "data": {"reused_from": original["id"], "from_run": original["run_id"]},
            }
        )
    run["event_seq"] = len(events)
    if not run_store.insert_run(conn, run, steps):
        return None
    run_store.insert_tags(conn, run_id, tenant_id, loaded.definition.tags, now)
    run_store.insert_events(
        conn,
        [
            {"run_id": run_id, "tenant_id": tenant_id, "seq": i + 1, "created_at": now, **e}
            for i, e in enumerate(events)
        ],
    )
    task_store.enqueue(
        conn, tenant_id=tenant_id, kind=task_store.RUN, run_id=run_id, due_at=now, now=now
    )
    return run


def manual_event(payload: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The trigger event of a manual or API trigger."""
    return {"id": None, "name": None, "payload": dict(payload or {}), "occurred_at": iso(now)}


def reusable_steps(
    steps: Sequence[Mapping[Any, Any]], keep: set[str]
) -> dict[str, Mapping[str, Any]]:
    """The completed steps among ``keep`` whose results a retry may reuse."""
    return {
        s["step_key"]: s
        for s in steps
        if s["step_key"] in keep and s["status"] == StepStatus.COMPLETED
    }
