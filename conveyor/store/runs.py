"""Runs, step runs, attempts and run events: the SQL the engine and the run views use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    RowMapping,
    bindparam,
    func,
    literal,
    select,
    update,
)

from conveyor.store.batch import MANY, insert_many, insert_new_copied, plain_insert, restrict_to
from conveyor.store.dialect import insert as upsert_insert
from conveyor.store.messaging_tables import events, messages, waits
from conveyor.store.tables import run_events, run_tags, runs, step_attempts, step_runs


def insert_runs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert runs in one statement; the ids of those inserted.

    A run whose idempotency key its automation already has is not inserted and
    not in the answer. Rows must all have the same columns and distinct keys.
    """
    if not rows:
        return set()
    if all(row.get("idempotency_key") is None for row in rows):
        insert_many(conn, runs, rows)  # no conflict possible
        return {str(row["id"]) for row in rows}
    # In key order, so two transactions taking the same keys lock them in the
    # same order; RETURNING says which were inserted (psycopg's rowcount cannot).
    rows = sorted(rows, key=lambda r: (str(r["automation_id"]), r["idempotency_key"] or ""))
    if len(rows) >= MANY:
        order = ("automation_id", "idempotency_key")
        return {str(i) for i in insert_new_copied(conn, runs, rows, runs.c.id, order)}
    stmt = upsert_insert(conn, runs).on_conflict_do_nothing(
        index_elements=["tenant_id", "automation_id", "idempotency_key"]
    )
    return {str(i) for i in conn.execute(stmt.returning(runs.c.id), list(rows)).scalars()}


def insert_steps(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert step rows (of any number of runs) in one statement."""
    insert_many(conn, step_runs, rows)


def find_by_idempotency_keys(
    conn: Connection, tenant_id: str, automation_id: str, keys: Sequence[str]
) -> dict[str, RowMapping]:
    """The runs of the automation started with these idempotency keys, by key."""
    if not keys:
        return {}
    query = select(runs).where(runs.c.tenant_id == tenant_id, runs.c.automation_id == automation_id)
    # Up to a thousand keys: an array parameter on PostgreSQL (conveyor.store.batch).
    rows = conn.execute(restrict_to(conn, query, runs.c.idempotency_key, keys)).mappings()
    return {str(row["idempotency_key"]): row for row in rows}


def find_by_idempotency_key(
    conn: Connection, tenant_id: str, automation_id: str, key: str
) -> RowMapping | None:
    """The run started earlier with this idempotency key, if any."""
    return (
        conn.execute(
            select(runs).where(
                runs.c.tenant_id == tenant_id,
                runs.c.automation_id == automation_id,
                runs.c.idempotency_key == key,
            )
        )
        .mappings()
        .first()
    )


# Statements on the engine's hot path are built once: building and cache-keying
# a Core statement costs more than executing it on SQLite.
_GET_RUN = select(runs).where(runs.c.id == bindparam("run_id"))
_GET_TENANT_RUN = _GET_RUN.where(runs.c.tenant_id == bindparam("tenant_id"))
_GET_STEPS = (
    select(step_runs)
    .where(step_runs.c.run_id == bindparam("run_id"))
    .order_by(step_runs.c.position)
)
_UPDATE_STEPS = update(step_runs).where(
    step_runs.c.run_id == bindparam("_run_id"), step_runs.c.step_key == bindparam("_step_key")
)
_UPDATE_ATTEMPTS = update(step_attempts).where(
    step_attempts.c.run_id == bindparam("_run_id"),
    step_attempts.c.step_key == bindparam("_step_key"),
    step_attempts.c.attempt == bindparam("_attempt"),
)


def get_run(conn: Connection, run_id: str, tenant_id: str | None = None) -> RowMapping | None:
    """One run; pass ``tenant_id`` whenever the caller acts for a tenant."""
    if tenant_id is None:
        return conn.execute(_GET_RUN, {"run_id": run_id}).mappings().first()
    return (
        conn.execute(_GET_TENANT_RUN, {"run_id": run_id, "tenant_id": tenant_id}).mappings().first()
    )


def get_steps(conn: Connection, run_id: str) -> Sequence[RowMapping]:
    """The run's step rows in definition order."""
    return conn.execute(_GET_STEPS, {"run_id": run_id}).mappings().all()


def update_steps(
    conn: Connection,
    run_id: str,
    changes: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
) -> None:
    """Write changed columns of several steps in one executemany.

    ``changes`` maps step key to changed columns; every row is written with the
    union of changed columns, taking the unchanged ones from ``current``.
    """
    if not changes:
        return
    columns = sorted({c for values in changes.values() for c in values})
    params = [
        {"_run_id": run_id, "_step_key": key, **{c: current[key][c] for c in columns}}
        for key in changes
    ]
    conn.execute(_UPDATE_STEPS, params)


def update_attempts(
    conn: Connection, run_id: str, changes: Sequence[tuple[str, int, Mapping[str, Any]]]
) -> None:
    """Close or change attempts (each change names step key, attempt and columns)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for key, attempt, values in changes:
        groups.setdefault(tuple(sorted(values)), []).append(
            {"_run_id": run_id, "_step_key": key, "_attempt": attempt, **values}
        )
    for params in groups.values():
        conn.execute(_UPDATE_ATTEMPTS, params)


def get_attempts(conn: Connection, run_id: str) -> Sequence[RowMapping]:
    """Every attempt of every step of the run, oldest first."""
    return (
        conn.execute(
            select(step_attempts)
            .where(step_attempts.c.run_id == run_id)
            .order_by(step_attempts.c.step_key, step_attempts.c.attempt)
        )
        .mappings()
        .all()
    )


def get_events(
    conn: Connection, run_id: str, after_seq: int = 0, limit: int | None = None
) -> Sequence[RowMapping]:
    """The run's history after ``after_seq`` (any 64-bit integer), in order."""
    # `seq` is a 32-bit column on PostgreSQL; a client's `after` may be any
    # 64-bit number, so it is sent as one (the comparison still uses the index).
    stmt = (
        select(run_events)
        .where(run_events.c.run_id == run_id, run_events.c.seq > literal(after_seq, BigInteger))
        .order_by(run_events.c.seq)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return conn.execute(stmt).mappings().all()


def retried_by(conn: Connection, run_id: str) -> list[str]:
    """Ids of the runs created as retries of this one."""
    return list(conn.execute(select(runs.c.id).where(runs.c.retry_of == run_id)).scalars())


def update_run(conn: Connection, run_id: str, values: Mapping[str, Any]) -> None:
    """Change columns of a run."""
    conn.execute(
        update(runs).where(runs.c.id == run_id).values(**values, version=runs.c.version + 1)
    )


def update_step(conn: Connection, run_id: str, step_key: str, values: Mapping[str, Any]) -> None:
    """Change columns of one step run."""
    conn.execute(
        update(step_runs)
        .where(step_runs.c.run_id == run_id, step_runs.c.step_key == step_key)
        .values(**values)
    )


def insert_attempts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record attempts that just started."""
    if rows:
        conn.execute(plain_insert(step_attempts), list(rows))


def update_attempt(
    conn: Connection, run_id: str, step_key: str, attempt: int, values: Mapping[str, Any]
) -> None:
    """Close or change one attempt."""
    conn.execute(
        update(step_attempts)
        .where(
            step_attempts.c.run_id == run_id,
            step_attempts.c.step_key == step_key,
            step_attempts.c.attempt == attempt,
        )
        .values(**values)
    )


def append_events(
    conn: Connection,
    *,
    run_id: str,
    tenant_id: str,
    events: Sequence[Mapping[str, Any]],
    run_values: Mapping[str, Any] | None = None,
) -> int:
    """Append history lines and apply ``run_values`` to the run in one UPDATE.

    The per-run sequence comes from ``runs.event_seq``; the UPDATE row-locks the
    run, so concurrent writers of the same run's history queue up instead of
    taking the same numbers. Returns the last sequence number.
    """
    values = dict(run_values or {})
    values["event_seq"] = runs.c.event_seq + len(events)
    values["version"] = runs.c.version + 1
    last: int = conn.execute(
        update(runs).where(runs.c.id == run_id).values(**values).returning(runs.c.event_seq)
    ).scalar_one()
    if events:
        first = last - len(events) + 1
        conn.execute(
            plain_insert(run_events),
            [
                {
                    "run_id": run_id,
                    "tenant_id": tenant_id,
                    "seq": first + i,
                    "type": e["type"],
                    "step_key": e.get("step_key"),
                    "data": e.get("data", {}),
                    "created_at": e["created_at"],
                }
                for i, e in enumerate(events)
            ],
        )
    return last


_BUMP_SEQ = (
    update(runs)
    .where(
        runs.c.tenant_id == bindparam("_tenant_id"),
        runs.c.id.in_(bindparam("_ids", expanding=True)),
    )
    .values(event_seq=runs.c.event_seq + 1, version=runs.c.version + 1)
    .returning(runs.c.id, runs.c.event_seq)
)
_LOCK_IN_ORDER = (
    select(runs.c.id)
    .where(runs.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(runs.c.id)
    .with_for_update()
)


def append_event_each(
    conn: Connection, tenant_id: str, lines: Mapping[str, Mapping[str, Any]]
) -> None:
    """Append one history line to each of several runs (run id -> line), whatever their number.

    ``append_events`` for many runs: one UPDATE takes the next sequence number
    of every run (and row-locks them), one INSERT writes the lines. On
    PostgreSQL the runs are locked in id order first, so two transactions
    appending to the same runs queue up instead of deadlocking.
    """
    if not lines:
        return
    ids = sorted(lines)
    if len(ids) > 1 and conn.dialect.name == "postgresql":
        conn.execute(_LOCK_IN_ORDER, {"ids": ids})
    rows = conn.execute(_BUMP_SEQ, {"_tenant_id": tenant_id, "_ids": ids})
    seqs = {str(r[0]): int(r[1]) for r in rows}
    insert_events(
        conn,
        [
            {
                "run_id": run_id,
                "tenant_id": tenant_id,
                "seq": seqs[run_id],
                "type": line["type"],
                "step_key": line.get("step_key"),
                "data": line.get("data", {}),
                "created_at": line["created_at"],
            }
            for run_id, line in lines.items()
            if run_id in seqs
        ],
    )


def get_waits(conn: Connection, run_id: str) -> Sequence[RowMapping]:
    """The run's waits, with the event that resumed each (if any), oldest first."""
    stmt = (
        select(
            waits,
            events.c.name.label("event_name_seen"),
            events.c.occurred_at.label("event_occurred_at"),
        )
        .select_from(
            waits.outerjoin(
                events,
                (events.c.tenant_id == waits.c.tenant_id)
                & (events.c.id == waits.c.resumed_by_event_id),
            )
        )
        .where(waits.c.run_id == run_id)
        .order_by(waits.c.created_at)
    )
    return conn.execute(stmt).mappings().all()


def get_messages(conn: Connection, run_id: str) -> Sequence[RowMapping]:
    """The emails and push notifications the run's steps sent (or tried to), oldest first."""
    return (
        conn.execute(
            select(messages).where(messages.c.run_id == run_id).order_by(messages.c.created_at)
        )
        .mappings()
        .all()
    )


def make_parked_step_due(conn: Connection, run_id: str, step_key: str, now: datetime) -> bool:
    """Set a waiting step's wake-up time to now; False if it is not waiting.

    The run is touched too (``touch``), so a round evaluating it meanwhile
    does not commit over the change.
    """
    result = conn.execute(
        update(step_runs)
        .where(
            step_runs.c.run_id == run_id,
            step_runs.c.step_key == step_key,
            step_runs.c.status == "waiting",
        )
        .values(wake_at=now)
    )
    if result.rowcount != 1:
        return False
    touch(conn, [run_id], now)
    return True


_TOUCH = (
    update(runs)
    .where(runs.c.id.in_(bindparam("ids", expanding=True)))
    .values(updated_at=bindparam("now"), version=runs.c.version + 1)
)


def touch(conn: Connection, run_ids: Sequence[str], now: datetime) -> None:
    """Mark runs as changed from outside their rounds (a round that read them before is redone).

    A worker's round compares each run's ``version`` with the one it read
    before committing (``conveyor.engine.batch``).
    """
    if run_ids:
        conn.execute(_TOUCH, {"ids": sorted(set(run_ids)), "now": now})


def insert_tags(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Copy automations' tags onto runs (rows of run_id, tenant_id, tag, created_at)."""
    insert_many(conn, run_tags, rows)


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert history lines whose sequence numbers the caller has reserved."""
    insert_many(conn, run_events, rows)


def count_runs(conn: Connection, tenant_id: str | None = None) -> int:
    """How many runs exist (for tests and benchmarks)."""
    stmt = select(func.count()).select_from(runs)
    if tenant_id is not None:
        stmt = stmt.where(runs.c.tenant_id == tenant_id)
    return int(conn.execute(stmt).scalar_one())
