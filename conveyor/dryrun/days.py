"""One day of a dry run: who the trigger would have matched, simulated, stored.

A ``dry_run`` task simulates one day. It first fences its lease and deletes
whatever an earlier, crashed attempt at the same day had written; then it
simulates the day's contacts a slice at a time, each slice read under a
snapshot and written in its own short transaction that proves the lease is
still held (so no writer lock or row lock is held while Python simulates);
last, one transaction adds the day to the dry run's progress and deletes the
task. A crash mid-day leaves some slices behind and the task in place: once
its lease expires the day is claimed again, its slices are replaced, and
results stay one per (day, contact). After the last commit the task is gone,
so a finished day is never redone. Several workers share a dry run by taking
different days; a cancel deletes the tasks, so the next fence stops the day
(the slices already written stay, as cancelled dry runs' results do).
"""

from __future__ import annotations

import time as clocks
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import ExpressionError
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.status import RunStatus, StepStatus
from conveyor.domain.times import iso
from conveyor.dryrun.history import EventHistory
from conveyor.dryrun.simulate import Simulation, Subject, simulate_run
from conveyor.engine.launch import manual_event
from conveyor.engine.schedules import next_fire
from conveyor.engine.steps import contact_view
from conveyor.store import contacts as contact_store
from conveyor.store import definitions
from conveyor.store import dry_runs as store
from conveyor.store import tasks as task_store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

CONTACT_PAGE = 500
# A day whose task keeps raising is given up after this many claims, failing the
# dry run, rather than retried for ever.
MAX_CLAIMS = 5
FINISHED = frozenset({"completed", "failed", "cancelled"})
# Contacts simulated (under one read snapshot) and written (in one short transaction) at a time.
WRITE_SLICE = 2000


def days_between(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end``, inclusive."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The day's first instant and the next day's, in UTC, for the local day in ``timezone``."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


# -- who the trigger matched -----------------------------------------------
def _event_view(event: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored event as a trigger event (as ingestion builds it)."""
    return {
        "id": event["id"],
        "name": event["name"],
        "payload": dict(event["payload"] or {}),
        "occurred_at": iso(event["occurred_at"]),
        "identity": event["identity"],
    }


def _event_subjects(
    conn: Connection, dr: RowMapping, loaded: LoadedDefinition, start: datetime, end: datetime
) -> list[Subject]:
    trigger = loaded.definition.trigger
    assert trigger.event is not None
    wanted = set(dr["profile_ids"]) if dr["profile_ids"] else None
    rows = store.events_between(conn, dr["tenant_id"], trigger.event, start, end)
    # Events without a contact have no one to report on; the rest by contact, first wins.
    rows = [r for r in rows if r["contact_id"] is not None]
    if wanted is not None:
        rows = [r for r in rows if str(r["contact_id"]) in wanted]
    contacts = contact_store.get_contacts(
        conn, dr["tenant_id"], {str(r["contact_id"]) for r in rows}
    )
    subjects: dict[str, Subject] = {}
    for row in rows:
        contact_id = str(row["contact_id"])
        contact = contacts.get(contact_id)
        event = _event_view(row)
        if trigger.filter:
            scope = {
                "event": event,
                "trigger": event,
                "identity": event["identity"],
                "contact": contact_view(contact),
            }
            try:
                if not evaluate_bool(trigger.filter, scope):
                    continue
            except ExpressionError:  # ingestion starts no run for it either
                continue
        if contact_id in subjects:
            subjects[contact_id].notes["more_events"] = (
                subjects[contact_id].notes.get("more_events", 0) + 1
            )
            continue
        subjects[contact_id] = Subject(contact, event, row["occurred_at"], "event")
    return list(subjects.values())


def _firings(cron: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    out: list[datetime] = []
    at = next_fire(cron, timezone, start - timedelta(seconds=1))
    while at < end:
        out.append(at)
        at = next_fire(cron, timezone, at)
    return out


def _schedule_subjects(
    conn: Connection, dr: RowMapping, loaded: LoadedDefinition, start: datetime, end: datetime
) -> list[Subject]:
    trigger = loaded.definition.trigger
    assert trigger.cron is not None
    firings = _firings(trigger.cron, trigger.timezone, start, end)
    if not firings:
        return []

    def event(at: datetime) -> dict[str, Any]:
        stamp = iso(at)
        payload = {"scheduled_at": stamp, "cron": trigger.cron, "timezone": trigger.timezone}
        return {"id": None, "name": "schedule", "occurred_at": stamp, "payload": payload}

    notes = {"firings": len(firings)} if len(firings) > 1 else {}
    if trigger.audience is None:  # a schedule without audience starts one run with no contact
        return [Subject(None, event(firings[0]), firings[0], "schedule", dict(notes))]
    wanted = set(dr["profile_ids"]) if dr["profile_ids"] else None
    subjects: list[Subject] = []
    after: str | None = None
    while True:
        page = contact_store.iter_contacts(conn, dr["tenant_id"], after=after, limit=CONTACT_PAGE)
        for contact in page:
            if wanted is not None and str(contact["id"]) not in wanted:
                continue
            for at in firings:  # the day's first firing that would have chosen the contact
                scope = {"contact": contact_view(contact), "now": at, "trigger": event(at)}
                try:
                    chosen = evaluate_bool(trigger.audience, scope)
                except ExpressionError:
                    chosen = False
                if chosen:
                    subjects.append(Subject(contact, event(at), at, "schedule", dict(notes)))
                    break
        if len(page) < CONTACT_PAGE:
            return subjects
        after = str(page[-1]["id"])


def subjects_of_day(
    conn: Connection, dr: RowMapping, loaded: LoadedDefinition, start: datetime, end: datetime
) -> list[Subject]:
    """The runs the trigger would have started that day, one per contact at most."""
    kind = loaded.definition.trigger.type
    if kind == "event":
        return _event_subjects(conn, dr, loaded, start, end)
    if kind == "schedule":
        return _schedule_subjects(conn, dr, loaded, start, end)
    # Manual: the profiles given, once each, at the day's start.
    contacts = contact_store.get_contacts(conn, dr["tenant_id"], dr["profile_ids"] or [])
    payload = (dr["arguments"] or {}).get("payload") or {}
    return [
        Subject(contacts[c], manual_event(payload, start), start, "manual")
        for c in dr["profile_ids"] or []
        if c in contacts
    ]


# -- comparing with real runs --------------------------------------------------
def _shape(steps: Any) -> dict[str, tuple[str, str | None]]:
    """What the comparison looks at per step: its status, and its branch when completed."""
    return {
        str(s["step_key"]): (
            str(s["status"]),
            s["branch_taken"] if s["status"] == StepStatus.COMPLETED else None,
        )
        for s in steps
    }


def agrees(sim: Simulation, real: RowMapping, real_steps: Sequence[RowMapping]) -> bool | None:
    """Whether a finished real run did what the simulation says it would have done.

    None while the real run is not finished: there is nothing to compare yet.
    Otherwise True only when the real run's status equals the simulated run's
    outcome and every step both runs have ended with the same status (and, if
    completed, took the same branch). Steps that only one of them has (the real
    run was of another version) cannot be compared and are left out.
    """
    if not RunStatus(real["status"]).terminal:
        return None
    if str(real["status"]) != str(sim.outcome):
        return False
    ours, theirs = _shape(sim.rows), _shape(real_steps)
    return all(ours[key] == theirs[key] for key in ours.keys() & theirs.keys())


# -- storing ---------------------------------------------------------------
def _run_row(
    dr: RowMapping, automation: Mapping[str, Any], run: Mapping[str, Any], sim: Simulation
) -> dict[str, Any]:
    """The simulated run record: a terminal run flagged ``dry_run``, with no task."""
    return {
        "id": sim.run_id,
        "tenant_id": dr["tenant_id"],
        "automation_id": dr["automation_id"],
        "automation_name": automation["name"],
        "version_id": dr["version_id"],
        "version_number": run["version_number"],
        "status": sim.outcome,
        "trigger_type": "dry_run",
        "trigger_source_type": "dry_run",
        "trigger_source_id": dr["id"],
        "trigger_event": run["trigger_event"],
        "identity": run["identity"],
        "identity_value": run["identity_value"],
        "contact_id": run["contact_id"],
        "concurrency_key": None,
        "idempotency_key": None,
        "retry_of": None,
        "root_run_id": None,
        "resend": False,
        "parent_run_id": None,
        "dry_run": True,
        "error": None,
        "event_seq": 0,
        "created_at": sim.started_at,
        "started_at": sim.started_at,
        "completed_at": sim.ended_at,
        "updated_at": sim.ended_at,
        "timeout_at": None,
    }


def _result_row(
    dr: RowMapping, day: date, subject: Subject, sim: Simulation, now: datetime
) -> dict[str, Any]:
    contact = subject.contact
    failed = next((s for s in sim.steps if s.get("status") == "failed"), None)
    result: dict[str, Any] = {
        "trigger": subject.trigger_event,
        "trigger_type": subject.trigger_type,
        "outcome": str(sim.outcome),
        "started_at": iso(sim.started_at),
        "ended_at": iso(sim.ended_at),
        "steps": sim.steps,
    }
    if failed is not None:
        result["reason"] = failed.get("reason")
    if sim.stopped is not None:
        result["stopped"] = sim.stopped
    if subject.notes:
        result["notes"] = subject.notes
    return {
        "id": sim.run_id,  # the result and its simulated run share an id: easy to cross-check
        "tenant_id": dr["tenant_id"],
        "dry_run_id": dr["id"],
        "automation_id": dr["automation_id"],
        "run_at": day.isoformat(),
        "profile_id": str(contact["id"]) if contact is not None else None,
        "result_type": "run",
        "result_id": sim.run_id,
        "status": sim.status,
        "result": result,
        "arguments": dr["arguments"],
        "requested_by": dr["requested_by"],
        "real_run_id": None,
        "agrees": None,
        "created_at": now,
        "updated_at": now,
    }


def _contact_id(subject: Subject) -> str | None:
    return str(subject.contact["id"]) if subject.contact is not None else None


@dataclass
class _Slice:
    """A slice's simulated runs, their steps and results, ready to write."""

    results: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def write(self, conn: Connection) -> None:
        store.insert_simulated_runs(conn, self.runs, self.steps)
        store.insert_results(conn, self.results)


class _DayRun:
    """Simulates a day's subjects a slice at a time; keeps the day's counts."""

    def __init__(
        self,
        dr: RowMapping,
        day: date,
        loaded: LoadedDefinition,
        bounds: tuple[datetime, datetime, datetime],  # the day's start and end, the range's end
        now: datetime,
        history: EventHistory,
    ) -> None:
        self.dr, self.day, self.loaded, self.now = dr, day, loaded, now
        self.start, self.end, self.range_end = bounds
        self.history = history
        self.templates: dict[Any, Any] = {}  # each template looked up once per day
        self.auto = {"name": loaded.definition.name}
        self.counts = {"success": 0, "failed": 0, "skipped": 0}
        self.simulated = 0

    def simulate(self, conn: Connection, subjects: Sequence[Subject]) -> _Slice:
        """Simulate ``subjects`` (reading through ``conn``) and compare with real runs."""
        dr = self.dr
        real = store.real_runs_of_day(
            conn,
            dr["tenant_id"],
            dr["automation_id"],
            [c for c in map(_contact_id, subjects) if c is not None],
            self.start,
            self.end,
        )
        self.history.use(conn)
        out = _Slice()
        for subject in subjects:
            sim, run = simulate_run(
                conn,
                tenant_id=dr["tenant_id"],
                automation=self.auto,
                loaded=self.loaded,
                subject=subject,
                range_end=self.range_end,
                template_cache=self.templates,
                history=self.history,
            )
            out.runs.append(_run_row(dr, self.auto, run, sim))
            out.steps.extend(sim.rows)
            row = _result_row(dr, self.day, subject, sim, self.now)
            found = real.get(str(row["profile_id"])) if row["profile_id"] else None
            if found is not None:
                row["real_run_id"] = str(found[0]["id"])
                row["agrees"] = agrees(sim, *found)
            out.results.append(row)
            self.counts[sim.status] += 1
        self.simulated += len(out.results)
        return out


def _finish(conn: Connection, dr_id: str, values: dict[str, Any], task_id: str) -> None:
    store.update_dry_run(conn, dr_id, values)
    task_store.delete_task(conn, task_id)


def _open_day(
    conn: Connection, task: RowMapping, token: str, now: datetime, lease: timedelta
) -> tuple[RowMapping, date, list[date]] | None:
    """Fence the task, settle what needs no simulating, and clear a crashed attempt's slices.

    Returns the dry run, the task's day and all the range's days, or None when
    there is nothing to simulate (the task is then gone, or the dry run failed).
    """
    task_store.fence(conn, task["id"], token, now + lease)
    dry_run_id = store.task_dry_run_id(conn, task["id"])
    dr = store.get_dry_run(conn, dry_run_id) if dry_run_id else None
    if dr is None or dr["status"] in FINISHED:
        task_store.delete_task(conn, task["id"])
        return None
    if int(task["claims"]) > MAX_CLAIMS:
        error = {"code": "day_failed", "detail": "a day of the dry run failed repeatedly"}
        store.delete_day_tasks(conn, dr["id"])
        store.update_dry_run(
            conn,
            dr["id"],
            {"status": "failed", "error": error, "updated_at": now, "completed_at": now},
        )
        return None
    days = days_between(date.fromisoformat(dr["start_date"]), date.fromisoformat(dr["end_date"]))
    day = next((d for d in days if store.day_task_id(dr["id"], d) == str(task["id"])), None)
    if day is None:  # not a task of this dry run's days: nothing to do
        task_store.delete_task(conn, task["id"])
        return None
    # Slices an earlier attempt committed before it died are replaced, not kept twice.
    store.delete_day_results(conn, dr["tenant_id"], dr["id"], day.isoformat())
    return dr, day, days


def process_day(
    db: Database,
    task: RowMapping,
    token: str,
    clock: Callable[[], datetime],
    lease: timedelta,
) -> None:
    """Simulate the task's day and store its results, a slice at a time (see the module doc)."""
    now = clock()
    with db.transaction() as conn:
        opened = _open_day(conn, task, token, now, lease)
    if opened is None:
        return
    dr, day, days = opened
    start, end = day_bounds(day, dr["timezone"])
    _, range_end = day_bounds(days[-1], dr["timezone"])
    with db.read() as conn:
        loaded = definitions.load(conn, dr["version_id"])
        subjects = subjects_of_day(conn, dr, loaded, start, end)
    history = EventHistory(dr["tenant_id"], {c for c in map(_contact_id, subjects) if c})
    day_run = _DayRun(dr, day, loaded, (start, end, range_end), now, history)
    for first in range(0, len(subjects), WRITE_SLICE):
        # Simulated under a read snapshot, written in a short transaction that
        # proves the lease is still held: a writer lock (SQLite) or row locks
        # are never held while Python simulates.
        with db.read() as conn:
            rows = day_run.simulate(conn, subjects[first : first + WRITE_SLICE])
        with db.transaction() as conn:
            task_store.fence(conn, task["id"], token, clock() + lease)
            rows.write(conn)
        clocks.sleep(0)  # let the worker's other threads (rounds, heartbeats) have the GIL
    with db.transaction() as conn:
        task_store.fence(conn, task["id"], token, clock() + lease)
        _close_day(conn, dr, task, loaded, day_run, now)


def _close_day(
    conn: Connection,
    dr: RowMapping,
    task: RowMapping,
    loaded: LoadedDefinition,
    day_run: _DayRun,
    now: datetime,
) -> None:
    """Add the day to the dry run's progress and delete its task."""
    counts, simulated = day_run.counts, day_run.simulated
    # Under the row lock, so days finishing together add up.
    locked = store.get_dry_run(conn, dr["id"], lock=True)
    assert locked is not None
    if locked["status"] in FINISHED:  # cancelled meanwhile: the day's results still stand
        task_store.delete_task(conn, task["id"])
        return
    done = int(locked["days_done"]) + 1
    merged = {k: int(locked["counts"].get(k, 0)) + v for k, v in counts.items()}
    manual = loaded.definition.trigger.type == "manual"
    values: dict[str, Any] = {
        "status": "completed" if done >= int(locked["days_total"]) else "running",
        "days_done": done,
        "contacts_done": int(locked["contacts_done"]) + simulated,
        # Known up front for a manual trigger; otherwise found day by day.
        "contacts_total": int(locked["contacts_total"]) + (0 if manual else simulated),
        "counts": merged,
        "updated_at": now,
    }
    if values["status"] == "completed":
        values["completed_at"] = now
    _finish(conn, dr["id"], values, task["id"])
