"""Waits for events: the SQL of ``wait_for_event`` steps and of event delivery.

A wait row is written when the step first runs and decided once, by a
compare-and-set on its ``status``: ``waiting`` becomes ``received`` (an event
won), ``timed_out`` (the timer won) or ``cancelled`` (the run ended). Every
decision below only applies to a row still ``waiting`` (an UPDATE ... WHERE
status = 'waiting', or rows locked FOR UPDATE, which re-checks the status
after a concurrent decision commits), so whoever decides first wins and the
other side finds nothing to change.

The stored events a new wait's lookback scans are read here too (by the
``ix_events_match`` index): that query exists only for waits.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    bindparam,
    case,
    exists,
    or_,
    select,
    text,
    update,
)

from conveyor.domain.ids import new_id
from conveyor.store.dialect import insert as dialect_insert
from conveyor.store.messaging_tables import events, waits
from conveyor.store.tables import runs, step_runs, tasks

WAITING = "waiting"
RECEIVED = "received"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"


def insert_wait(conn: Connection, row: Mapping[str, Any]) -> None:
    """Record a new wait (its step's first execution)."""
    conn.execute(waits.insert(), dict(row))


_GET = select(waits).where(
    waits.c.run_id == bindparam("run_id"), waits.c.step_key == bindparam("k")
)


def get_wait(conn: Connection, run_id: str, step_key: str) -> RowMapping | None:
    """The wait of one step of a run, if the step ever started waiting."""
    return conn.execute(_GET, {"run_id": run_id, "k": step_key}).mappings().first()


# The step must still be parked: a wait whose step was cancelled (a fatal failure
# elsewhere in the run) must not be reported as received.
_STEP_PARKED = exists().where(
    step_runs.c.run_id == waits.c.run_id,
    step_runs.c.step_key == waits.c.step_key,
    step_runs.c.status == "waiting",
)
_TIME_OUT = (
    update(waits)
    .where(
        waits.c.run_id == bindparam("_run_id"),
        waits.c.step_key == bindparam("_step_key"),
        waits.c.status == WAITING,
        waits.c.timeout_at <= bindparam("_now"),
    )
    .values(status=TIMED_OUT, timed_out_at=bindparam("_now"), outcome_branch=TIMED_OUT)
    .returning(waits.c.id, waits.c.timeout_at)
)


_TIME_OUT_MANY = (
    update(waits)
    .where(
        waits.c.run_id.in_(bindparam("_run_ids", expanding=True)),
        waits.c.status == WAITING,
        waits.c.timeout_at <= bindparam("_now"),
    )
    .values(status=TIMED_OUT, timed_out_at=bindparam("_now"), outcome_branch=TIMED_OUT)
    .returning(waits.c.id, waits.c.run_id, waits.c.step_key, waits.c.timeout_at)
)


def time_out_many(
    conn: Connection, run_ids: list[str], now: datetime
) -> dict[tuple[str, str], RowMapping]:
    """The same compare-and-set for every due wait of these runs, in one statement.

    Returns the waits this call decided, by (run id, step key).
    """
    if not run_ids:
        return {}
    rows = conn.execute(_TIME_OUT_MANY, {"_run_ids": run_ids, "_now": now}).mappings()
    return {(r["run_id"], r["step_key"]): r for r in rows}


def time_out(conn: Connection, run_id: str, step_key: str, now: datetime) -> RowMapping | None:
    """Compare-and-set ``waiting`` -> ``timed_out`` if the timeout has passed.

    Returns the wait's ``id`` and ``timeout_at`` only for the one caller that
    won; None when the wait was decided already or its time has not come.
    """
    params = {"_run_id": run_id, "_step_key": step_key, "_now": now}
    return conn.execute(_TIME_OUT, params).mappings().first()


_WITH_EVENT_BASE = select(
    waits,
    events.c.name.label("event_name_seen"),
    events.c.identity.label("event_identity"),
    events.c.contact_id.label("event_contact_id"),
    events.c.payload.label("event_payload"),
    events.c.occurred_at.label("event_occurred_at"),
).select_from(
    waits.outerjoin(
        events,
        (events.c.tenant_id == waits.c.tenant_id) & (events.c.id == waits.c.resumed_by_event_id),
    )
)
_WITH_EVENT = _WITH_EVENT_BASE.where(
    waits.c.run_id == bindparam("run_id"), waits.c.step_key == bindparam("k")
)


def get_wait_with_event(conn: Connection, run_id: str, step_key: str) -> RowMapping | None:
    """A step's wait and, once received, the event that resumed it (``event_*`` columns)."""
    return conn.execute(_WITH_EVENT, {"run_id": run_id, "k": step_key}).mappings().first()


def cancel_open(conn: Connection, run_id: str) -> list[str]:
    """Mark the run's undecided waits ``cancelled``; return their step keys."""
    result = conn.execute(
        update(waits)
        .where(waits.c.run_id == run_id, waits.c.status == WAITING)
        .values(status=CANCELLED)
        .returning(waits.c.step_key)
    )
    return [r[0] for r in result]


_ANY_FOR_NAME = select(waits.c.id).where(
    waits.c.tenant_id == bindparam("tenant_id"), waits.c.event_name == bindparam("name")
)


def any_for_name(conn: Connection, tenant_id: str, name: str) -> bool:
    """Whether the tenant ever waited for this event name (a cheap first look per batch)."""
    row = conn.execute(_ANY_FOR_NAME.limit(1), {"tenant_id": tenant_id, "name": name}).first()
    return row is not None


_CANDIDATES = (
    select(
        waits,
        runs.c.automation_name,
        runs.c.version_id,
        runs.c.version_number,
        runs.c.trigger_event,
        runs.c.identity,
        runs.c.created_at.label("run_created_at"),
        runs.c.contact_id.label("run_contact_id"),
    )
    .select_from(waits.join(runs, runs.c.id == waits.c.run_id))
    .where(
        # ix_waits_open: (tenant, event name, contact, status)
        waits.c.tenant_id == bindparam("tenant_id"),
        waits.c.event_name.in_(bindparam("names", expanding=True)),
        or_(
            waits.c.contact_id.in_(bindparam("contact_ids", expanding=True)),
            and_(
                waits.c.contact_id.is_(None),
                or_(
                    waits.c.identity_value.in_(bindparam("values", expanding=True)),
                    waits.c.identity_value.is_(None),
                ),
            ),
        ),
        or_(
            waits.c.status == WAITING,
            and_(waits.c.status == TIMED_OUT, waits.c.timed_out_at >= bindparam("late_since")),
        ),
    )
    .order_by(waits.c.run_id, waits.c.step_key)
)


def candidates(
    conn: Connection,
    tenant_id: str,
    *,
    names: Collection[str],
    contact_ids: Collection[str],
    identity_values: Collection[str],
    late_since: datetime,
) -> Sequence[RowMapping]:
    """Waits a batch of events could concern: open ones, and those timed out since ``late_since``.

    Same tenant and event name, and the same contact: one of ``contact_ids``,
    or, for a wait of a run without a contact, one of ``identity_values`` (a
    wait with neither listens to the whole tenant). The caller pairs events
    and waits exactly. Each row carries the fields of its run that a ``match``
    expression sees.
    """
    params = {
        "tenant_id": tenant_id,
        "names": sorted(names),
        "contact_ids": sorted({c for c in map(_uuid, contact_ids) if c is not None}),
        "values": sorted(identity_values),
        "late_since": late_since,
    }
    return conn.execute(_CANDIDATES, params).mappings().all()


_LOCK_OPEN = (
    select(waits.c.id)
    .where(
        waits.c.id.in_(bindparam("ids", expanding=True)), waits.c.status == WAITING, _STEP_PARKED
    )
    .with_for_update(of=waits)
)
_MARK_RECEIVED = (
    update(waits)
    .where(waits.c.id == bindparam("_id"))
    .values(
        status=RECEIVED,
        resumed_at=bindparam("_now"),
        outcome_branch=RECEIVED,
        resumed_by_event_id=bindparam("_event_id"),
    )
)


def receive_many(conn: Connection, decided: Mapping[str, str], now: datetime) -> set[str]:
    """Compare-and-set each wait ``waiting`` -> ``received`` by its event; return the winners.

    ``decided`` maps wait id to the id of the event that resumes it. The open
    ones (whose step is still parked) are row-locked and then updated: two
    statements for any number of waits. A wait decided already is left alone
    and not returned.
    """
    if not decided:
        return set()
    # FOR UPDATE waits for a concurrent decision and re-checks the status after
    # it (PostgreSQL); SQLite has one writer at a time anyway.
    won = {str(r[0]) for r in conn.execute(_LOCK_OPEN, {"ids": sorted(decided)})}
    if won:
        params = [{"_id": i, "_now": now, "_event_id": decided[i]} for i in sorted(won)]
        conn.execute(_MARK_RECEIVED, params)
    return won


_LOCK_TASKS = (
    select(tasks.c.id)
    .where(tasks.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(tasks.c.run_id, tasks.c.id)
    .with_for_update()
)


def lock_run_tasks(conn: Connection, run_ids: Sequence[str]) -> None:
    """Row-lock the runs' tasks (PostgreSQL), in run order, before their waits and steps.

    That is the order a worker's round takes them, so a delivery and a round
    of the same run queue up instead of deadlocking.
    """
    if run_ids and conn.dialect.name == "postgresql":
        conn.execute(_LOCK_TASKS, {"run_ids": list(run_ids)})


_QUEUE_RUN: dict[str, Any] = {}  # built once per dialect


def queue_runs(conn: Connection, tenant_id: str, run_ids: Sequence[str], now: datetime) -> None:
    """Make each run's task due now (creating it if needed); the caller notifies the workers."""
    if not run_ids:
        return
    stmt = _QUEUE_RUN.get(conn.dialect.name)
    if stmt is None:
        ins = dialect_insert(conn, tasks)
        # the earlier of the two due times, without a dialect-specific least()/min()
        earliest = case(
            (tasks.c.due_at <= ins.excluded.due_at, tasks.c.due_at), else_=ins.excluded.due_at
        )
        stmt = ins.on_conflict_do_update(
            index_elements=["run_id", "kind"], set_={"due_at": earliest}
        )
        _QUEUE_RUN[conn.dialect.name] = stmt
    rows = [
        {
            "id": new_id(),
            "tenant_id": tenant_id,
            "kind": "run",
            "run_id": r,
            "due_at": now,
            "created_at": now,
        }
        for r in run_ids
    ]
    conn.execute(stmt, rows)


_STEP_DUE = (
    update(step_runs)
    .where(
        step_runs.c.run_id == bindparam("_run_id"),
        step_runs.c.step_key == bindparam("_step_key"),
        step_runs.c.status == "waiting",
    )
    .values(wake_at=bindparam("_now"))
)


def make_steps_due(conn: Connection, steps: Sequence[tuple[str, str]], now: datetime) -> None:
    """Set each parked step's wake-up time to now (``(run id, step key)`` pairs)."""
    if steps:
        conn.execute(_STEP_DUE, [{"_run_id": r, "_step_key": k, "_now": now} for r, k in steps])


def _uuid(value: str | None) -> str | None:
    """A canonical id, or None for a value that is not one (it matches no uuid column)."""
    if value is None:
        return None
    try:
        return str(UUID(str(value)))
    except ValueError:
        return None


def events_in_window(
    conn: Connection,
    tenant_id: str,
    name: str,
    *,
    contact_id: str | None,
    identity_value: str | None,
    since: datetime,
    until: datetime,
    limit: int = 1000,
) -> Sequence[RowMapping]:
    """Stored events a new wait could take at once (its lookback), oldest first."""
    stmt = select(events).where(
        events.c.tenant_id == tenant_id,
        events.c.name == name,
        events.c.occurred_at >= since,
        events.c.occurred_at <= until,
    )
    if contact_id is not None:
        stmt = stmt.where(events.c.contact_id == _uuid(contact_id))
    elif identity_value is not None:
        # JSON access differs between the databases; filter the value in Python.
        rows = conn.execute(stmt.order_by(events.c.occurred_at).limit(limit)).mappings().all()
        return [r for r in rows if _identity_value(r["identity"]) == identity_value]
    return conn.execute(stmt.order_by(events.c.occurred_at).limit(limit)).mappings().all()


def _identity_value(identity: Any) -> str | None:
    if isinstance(identity, Mapping) and identity.get("value") is not None:
        return str(identity["value"])
    return None


def any_event_since(conn: Connection, wait: Mapping[str, Any]) -> bool:
    """Whether an event this wait could take is stored already (from its ``lookback_from`` on).

    A new wait asks this at the commit that writes it: an event stored while
    the round was evaluated did not see the wait, so the wait must look.
    """
    where = [
        events.c.tenant_id == wait["tenant_id"],
        events.c.name == wait["event_name"],
        events.c.occurred_at >= wait["lookback_from"],
    ]
    if wait["contact_id"] is not None:
        where.append(events.c.contact_id == _uuid(str(wait["contact_id"])))
    elif wait["identity_value"] is not None:
        # JSON access differs between the databases; compare the value in Python.
        found = conn.execute(select(events.c.identity).where(*where).limit(1000)).scalars()
        return any(_identity_value(i) == wait["identity_value"] for i in found)
    return conn.execute(select(events.c.id).where(*where).limit(1)).first() is not None


_TIME_OUT_IDS = (
    update(waits)
    .where(
        waits.c.id.in_(bindparam("_ids", expanding=True)),
        waits.c.status == WAITING,
        waits.c.timeout_at <= bindparam("_now"),
    )
    .values(status=TIMED_OUT, timed_out_at=bindparam("_now"), outcome_branch=TIMED_OUT)
    .returning(waits.c.id)
)


def time_out_ids(conn: Connection, wait_ids: Collection[str], now: datetime) -> set[str]:
    """Compare-and-set these waits ``waiting`` -> ``timed_out`` (if due); return the winners.

    One statement for a whole batch of rounds.
    """
    if not wait_ids:
        return set()
    rows = conn.execute(_TIME_OUT_IDS, {"_ids": sorted(wait_ids), "_now": now})
    return {str(r[0]) for r in rows}


_OF_RUNS = _WITH_EVENT_BASE.where(waits.c.run_id.in_(bindparam("run_ids", expanding=True)))


def waits_of_runs(conn: Connection, run_ids: Collection[str]) -> dict[tuple[str, str], RowMapping]:
    """Every wait of these runs with the event that resumed it, by (run id, step key)."""
    if not run_ids:
        return {}
    rows = conn.execute(_OF_RUNS, {"run_ids": sorted(run_ids)}).mappings()
    return {(str(r["run_id"]), r["step_key"]): r for r in rows}


def lock_names(conn: Connection, tenant_id: str, names: Collection[str]) -> None:
    """Hold, until commit, a lock per (tenant, event name) (PostgreSQL; SQLite has one writer).

    Event delivery and a new wait take it before they write and look for each
    other, so two concurrent transactions cannot both miss the other's row.
    """
    if conn.dialect.name != "postgresql" or not names:
        return
    keys = [f"{tenant_id}:{name}" for name in sorted(set(names))]
    conn.execute(_LOCK_NAMES, {"keys": keys})


_LOCK_NAMES = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k"
)
