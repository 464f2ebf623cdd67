"""The SQL of engine rounds, for many runs at once.

A worker reads the runs it claimed in one read transaction (load), evaluates
them with none open, and writes them all in one write transaction with a
fixed number of statements (fence the leases, lock and compare the runs,
then the writes: on PostgreSQL mostly one statement, ``conveyor.store.together``;
on SQLite one executemany per table), so the cost per run is a few rows
rather than a few round trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, delete, select, update

from conveyor.store.batch import copy_rows, insert_many
from conveyor.store.db import request_wakeup
from conveyor.store.dialect import insert as dialect_insert
from conveyor.store.dialect import is_postgresql
from conveyor.store.messaging_tables import contacts
from conveyor.store.tables import run_events, runs, step_attempts, step_runs, tasks
from conveyor.store.together import ROWS, Together

_FENCE = (
    update(tasks)
    .where(tasks.c.id.in_(bindparam("ids", expanding=True)))
    .where(tasks.c.lease_token == bindparam("token"))
    .values(lease_expires_at=bindparam("until"))
    .returning(tasks.c.id)
)
_RUNS = select(runs).where(runs.c.id.in_(bindparam("ids", expanding=True)))
_RUNS_LOCKED = _RUNS.with_for_update()
_STEPS = (
    select(step_runs)
    .where(step_runs.c.run_id.in_(bindparam("ids", expanding=True)))
    .order_by(step_runs.c.run_id, step_runs.c.position)
)
# The columns a round sets from its run rows; saving one also adds one to its version.
_SAVED = (
    "status",
    "started_at",
    "completed_at",
    "error",
    "timeout_at",
    "concurrency_key",
    "updated_at",
    "event_seq",
)
_SAVE_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("_id"))
    .values({c: bindparam(c) for c in _SAVED} | {"version": runs.c.version + 1})
)
_UPDATE_STEP = update(step_runs).where(
    step_runs.c.run_id == bindparam("_run_id"), step_runs.c.step_key == bindparam("_step_key")
)
_UPDATE_ATTEMPT = update(step_attempts).where(
    step_attempts.c.run_id == bindparam("_run_id"),
    step_attempts.c.step_key == bindparam("_step_key"),
    step_attempts.c.attempt == bindparam("_attempt"),
)
# One statement for a batch's deletes, not one per run.
_DELETE_TASKS = delete(tasks).where(tasks.c.id.in_(bindparam("ids", expanding=True)))
_DELETE_RUN_TASKS = delete(tasks).where(tasks.c.run_id.in_(bindparam("ids", expanding=True)))
# A claim that ends by giving the task back ends the count of tries: it is not poison.
_RESCHEDULE = (
    update(tasks)
    .where(tasks.c.id == bindparam("_id"))
    .values(
        due_at=bindparam("due_at"),
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
        tries=0,
    )
)


def fence_many(conn: Connection, token: str, task_ids: Sequence[str], until: datetime) -> set[str]:
    """Extend the leases still held under ``token``; return the ids that were held.

    On PostgreSQL the UPDATE row-locks those tasks until commit, so nobody can
    take them over between this check and the commit.
    """
    if not task_ids:
        return set()
    rows = conn.execute(_FENCE, {"ids": list(task_ids), "token": token, "until": until})
    return {r[0] for r in rows}


def load_runs(
    conn: Connection, run_ids: Sequence[str], *, lock: bool = True
) -> dict[str, RowMapping]:
    """The runs; with ``lock``, row-locked on PostgreSQL so their event sequences cannot move."""
    if not run_ids:
        return {}
    stmt = _RUNS_LOCKED if lock and conn.dialect.name == "postgresql" else _RUNS
    return {r["id"]: r for r in conn.execute(stmt, {"ids": list(run_ids)}).mappings()}


_VERSIONS = select(runs.c.id, runs.c.version).where(runs.c.id.in_(bindparam("ids", expanding=True)))
_VERSIONS_LOCKED = _VERSIONS.with_for_update()


def run_versions(conn: Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """Each run's ``version`` now, row-locked on PostgreSQL until commit.

    A round compares it with the version it read: every writer of a run row
    (a round, a cancel, an event delivered, a history line) adds one to it.
    """
    if not run_ids:
        return {}
    stmt = _VERSIONS_LOCKED if conn.dialect.name == "postgresql" else _VERSIONS
    rows = conn.execute(stmt, {"ids": sorted(set(run_ids))})
    return {str(r[0]): int(r[1]) for r in rows}


def load_steps(conn: Connection, run_ids: Sequence[str]) -> dict[str, list[RowMapping]]:
    """The step rows of each run, in definition order."""
    out: dict[str, list[RowMapping]] = {rid: [] for rid in run_ids}
    if run_ids:
        for r in conn.execute(_STEPS, {"ids": list(run_ids)}).mappings():
            out[r["run_id"]].append(r)
    return out


_CONTACTS = select(contacts).where(contacts.c.id.in_(bindparam("ids", expanding=True)))


def load_contacts(conn: Connection, contact_ids: Sequence[str]) -> dict[str, RowMapping]:
    """The contacts of the runs in a batch (their expressions see ``contact``)."""
    if not contact_ids:
        return {}
    rows = conn.execute(_CONTACTS, {"ids": list(set(contact_ids))}).mappings()
    return {r["id"]: r for r in rows}


@dataclass
class Writes:
    """Everything a batch of rounds changes, written by ``flush``."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    step_changes: list[tuple[str, str, set[str], Mapping[str, Any]]] = field(
        default_factory=list
    )  # (run id, step key, changed columns, the step's current row)
    new_attempts: list[dict[str, Any]] = field(default_factory=list)
    attempt_changes: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    delete_tasks: list[str] = field(default_factory=list)
    delete_run_tasks: list[str] = field(default_factory=list)
    reschedules: list[tuple[str, datetime]] = field(default_factory=list)
    new_tasks: list[dict[str, Any]] = field(default_factory=list)
    # runs that ended failed, exhausted or timed-out (for automation_failure triggers)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Writes) -> None:
        """Add another round's writes to these."""
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


def _grouped(rows: Iterable[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Group parameter sets by their keys (an executemany needs one shape)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups.values()


def flush(conn: Connection, w: Writes) -> None:
    """Write a batch of rounds: on PostgreSQL mostly one statement, on SQLite one per table."""
    if is_postgresql(conn):
        _flush_together(conn, w)
        return
    if w.step_changes:
        conn.execute(
            _UPDATE_STEP,
            [
                {"_run_id": c.pop("run_id"), "_step_key": c.pop("step_key"), **c}
                for c in _step_changes(w)
            ],
        )
    insert_many(conn, step_attempts, w.new_attempts)
    _update_attempts(conn, w)
    if w.runs:
        conn.execute(_SAVE_RUN, w.runs)
    insert_many(conn, run_events, w.events)
    _write_tasks(conn, w)
    if w.delete_tasks:
        conn.execute(_DELETE_TASKS, {"ids": w.delete_tasks})
    if w.delete_run_tasks:
        conn.execute(_DELETE_RUN_TASKS, {"ids": w.delete_run_tasks})


def _flush_together(conn: Connection, w: Writes) -> None:
    """PostgreSQL: the steps, runs, new attempts and history lines in one statement.

    With the tasks' deletes too, unless the batch also inserts or reschedules
    tasks (one statement must not write a table twice). Attempts and history
    lines past ``together.ROWS`` go by COPY first; attempts changed (of calls
    that ended) follow, as they may be attempts this batch inserts.
    """
    together = Together(conn)
    if w.step_changes:
        together.update(step_runs, ("run_id", "step_key"), _step_changes(w))
    for table, rows in ((step_attempts, w.new_attempts), (run_events, w.events)):
        if len(rows) > ROWS:
            copy_rows(conn, table, rows)
        else:
            together.insert(table, rows)
    if w.runs:
        saved = [{"id": r["_id"], **{c: r[c] for c in _SAVED}} for r in w.runs]
        together.update(runs, ("id",), saved, also='"version" = t."version" + 1')
    deletes = {"id": w.delete_tasks, "run_id": w.delete_run_tasks}
    if not (w.new_tasks or w.reschedules):
        together.delete(tasks, deletes)
    together.send()
    _update_attempts(conn, w)
    if w.new_tasks or w.reschedules:
        _write_tasks(conn, w)
        together.delete(tasks, deletes)
        together.send()


def _step_changes(w: Writes) -> list[dict[str, Any]]:
    """The batch's step changes, each with every column any of them changed."""
    columns = sorted({c for _, _, cols, _ in w.step_changes for c in cols})
    return [
        {"run_id": run_id, "step_key": key, **{c: row[c] for c in columns}}
        for run_id, key, _, row in w.step_changes
    ]


def _update_attempts(conn: Connection, w: Writes) -> None:
    if w.attempt_changes:
        params = (
            {"_run_id": r, "_step_key": k, "_attempt": a, **v} for r, k, a, v in w.attempt_changes
        )
        for group in _grouped(params):
            conn.execute(_UPDATE_ATTEMPT, group)


def _write_tasks(conn: Connection, w: Writes) -> None:
    """New tasks and new due times (the tasks' deletes are the caller's)."""
    if w.new_tasks:
        conn.execute(
            dialect_insert(conn, tasks).on_conflict_do_nothing(index_elements=["run_id", "kind"]),
            w.new_tasks,
        )
    if w.reschedules or w.new_tasks:
        # This process's workers sleep until the earliest due task they know
        # of; a round that sets a due time wakes them to look again.
        request_wakeup(conn)
    if w.reschedules:
        conn.execute(_RESCHEDULE, [{"_id": i, "due_at": d} for i, d in w.reschedules])
