"""Creating runs: the one place a run, its steps, first event and task are written.

Used by manual and batch triggers, events, schedules, retries and replays,
bulk operations, child runs and the automation-failure trigger.
``create_runs`` writes any number of runs with one statement per table (runs,
steps, tags, history lines, tasks); ``create_run`` is its one-item case.

No user code runs here (it is called inside write transactions): a
concurrency key is either evaluated by the caller beforehand
(``concurrency_key``, outside any transaction) and given in
``Launch.concurrency_key``, or left for the run's first round to evaluate.
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


@dataclass(frozen=True)
class NewRun:
    """One run to create: of which automation, at which version, and why."""

    automation: Mapping[str, Any] | RowMapping
    loaded: LoadedDefinition
    launch: Launch


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

    Returns the new run row as a dict. ``create_runs`` with one item.
    """
    (run,) = create_runs(
        conn, tenant_id=tenant_id, items=[NewRun(automation, loaded, launch)], now=now
    )
    return run


def create_runs(
    conn: Connection, *, tenant_id: str, items: Sequence[NewRun], now: datetime
) -> list[dict[str, Any] | None]:
    """Insert pending runs and queue them, with the same statements whatever their number.

    One statement each for the runs, their steps, their tags, their first
    history lines and their tasks (from 16 rows on, ``COPY`` on PostgreSQL:
    ``conveyor.store.batch``). Returns, item by item, the new run row as a
    dict, or None where the run's idempotency key was taken: by an existing
    run of its automation, or by an earlier item of ``items``.
    """
    prepared: list[_Rows | None] = []
    keys: set[tuple[str, str]] = set()
    for item in items:
        key = item.launch.idempotency_key
        if key is not None:
            if (str(item.automation["id"]), key) in keys:
                prepared.append(None)  # an earlier item takes this key
                continue
            keys.add((str(item.automation["id"]), key))
        prepared.append(_prepare(tenant_id, item, now))
    inserted = run_store.insert_runs(conn, [p.run for p in prepared if p is not None])
    created = [p if p is not None and p.run["id"] in inserted else None for p in prepared]
    made = [p for p in created if p is not None]
    run_store.insert_steps(conn, [step for p in made for step in p.steps])
    run_store.insert_tags(
        conn,
        [
            {"run_id": p.run["id"], "tenant_id": tenant_id, "tag": tag, "created_at": now}
            for p in made
            for tag in dict.fromkeys(p.tags)
        ],
    )
    run_store.insert_events(conn, [event for p in made for event in p.events])
    task_store.enqueue_runs(conn, [(tenant_id, p.run["id"]) for p in made], due_at=now, now=now)
    return [p.run if p is not None else None for p in created]


@dataclass
class _Rows:
    """The rows of one new run."""

    run: dict[str, Any]
    steps: list[dict[str, Any]]
    events: list[dict[str, Any]]
    tags: Sequence[str]


def _prepare(tenant_id: str, item: NewRun, now: datetime) -> _Rows:
    """The rows of one new run: the run, its steps, its first history lines."""
    launch, loaded, automation = item.launch, item.loaded, item.automation
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
    rows = [
        {"run_id": run_id, "tenant_id": tenant_id, "seq": i + 1, "created_at": now, **e}
        for i, e in enumerate(events)
    ]
    return _Rows(run, steps, rows, loaded.definition.tags)


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
