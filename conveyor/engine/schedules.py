"""Schedules: cron triggers, fired by the workers, never twice.

Each scheduled automation has a ``schedules`` row holding its next firing time
and one queue task of kind ``schedule`` due then. A worker that claims the
task fires it: one run per contact matching the ``audience`` (or one run
without a contact when there is no audience), a page of contacts at a time
(read, the audience evaluated with no transaction open, the page's runs
started in one write transaction), then stores the next firing time and
makes the task due again.

Never twice: the task is leased and every transaction is fenced on the lease,
the next firing time is stored rather than derived, and every run carries the
idempotency key ``schedule:<fire time>:<contact id>``, so a firing taken over
from a dead worker, or repeated after a crash, starts no run twice.

Cron times are evaluated in the schedule's time zone with cronsim: across a
DST change, a daily job at a time that does not exist that day (02:30 on a
spring-forward night) runs at the first valid minute after it, and a time that
happens twice (fall back) runs once, as Debian's cron does; jobs with a
wildcard minute or hour run by elapsed time.

Missed firings (every worker down, say) follow ``CONVEYOR_SCHEDULE_MISSED``:
``once`` (default) fires the latest due time once and continues from the next
future time; ``all`` fires every due time in order (one after the other, in
the same job); ``skip`` fires the latest
due time only if it is at most ``CONVEYOR_SCHEDULE_GRACE_SECONDS`` late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from sqlalchemy import Connection, RowMapping

from conveyor.domain import sandbox
from conveyor.domain.definition import AutomationDefinition, Trigger
from conveyor.domain.errors import ConveyorError, InvalidDefinition
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, NewRun, concurrency_key, create_runs
from conveyor.engine.steps import contact_view
from conveyor.store import automations as automation_store
from conveyor.store import contacts as contact_store
from conveyor.store import definitions
from conveyor.store import schedules as schedule_store
from conveyor.store import tasks as task_store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

log = logging.getLogger("conveyor.schedules")
SCHEDULE = schedule_store.SCHEDULE
PAGE = 500  # contacts per transaction
# A page's audience and keys may use this many times the expression timeout of
# CPU; contacts not reached by then are left to the next page.
PAGE_CPU_FACTOR = 4
MissedPolicy = Literal["once", "all", "skip"]


# -- cron ---------------------------------------------------------------
def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC in, UTC out)."""
    local = after.astimezone(_zone(timezone))
    return next(CronSim(cron, local)).astimezone(UTC)


def latest_due(cron: str, timezone: str, now: datetime) -> datetime:
    """The last cron time at or before ``now`` (UTC)."""
    # cronsim steps back one second before looking, so start a second later.
    start = (now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(_zone(timezone))
    return next(CronSim(cron, start, reverse=True)).astimezone(UTC)


def check_trigger(trigger: Trigger) -> None:
    """Refuse a schedule trigger whose cron expression or time zone is not valid.

    Raises:
        InvalidDefinition: naming ``trigger.cron`` or ``trigger.timezone``.
    """
    if trigger.type != "schedule" or trigger.cron is None:
        return
    errors: list[dict[str, Any]] = []
    try:
        _zone(trigger.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(
            {
                "loc": ["trigger", "timezone"],
                "msg": f"unknown time zone {trigger.timezone!r}",
                "type": "bad_timezone",
            }
        )
    try:
        next_fire(trigger.cron, "UTC", datetime.now(UTC))
    except (CronSimError, StopIteration) as exc:
        msg = str(exc) or "it never fires"
        errors.append(
            {"loc": ["trigger", "cron"], "msg": f"bad cron expression: {msg}", "type": "bad_cron"}
        )
    if errors:
        raise InvalidDefinition(errors)


# -- upkeep (automation create, update, delete) ---------------------------
def sync_schedule(
    conn: Connection,
    tenant_id: str,
    automation_id: str,
    definition: AutomationDefinition | None,
    now: datetime,
) -> None:
    """Make the automation's schedule follow its definition (None: the automation is gone).

    An unchanged cron and time zone keep the stored next firing time (a due
    firing is not skipped by an unrelated edit); a new one starts from now. A
    disabled automation's schedule stops; a trigger that is no longer a
    schedule, or a deleted automation, removes it.
    """
    trigger = definition.trigger if definition is not None else None
    if definition is None or trigger is None or trigger.type != "schedule" or not trigger.cron:
        schedule_store.delete_tasks(conn, automation_id)
        schedule_store.remove(conn, automation_id)
        return
    if not definition.enabled:
        schedule_store.delete_tasks(conn, automation_id)
        schedule_store.disable(conn, automation_id, now)
        return
    current = schedule_store.get(conn, automation_id)
    unchanged = (
        current is not None
        and current["enabled"]
        and current["cron"] == trigger.cron
        and current["timezone"] == trigger.timezone
    )
    if unchanged and current is not None and schedule_store.has_task(conn, automation_id):
        return
    nxt = current["next_fire_at"] if unchanged and current is not None else None
    if nxt is None:
        nxt = next_fire(trigger.cron, trigger.timezone, now)
    schedule_store.upsert(
        conn,
        automation_id=automation_id,
        tenant_id=tenant_id,
        cron=trigger.cron,
        timezone=trigger.timezone,
        next_fire_at=nxt,
        enabled=True,
        now=now,
    )
    schedule_store.replace_task(
        conn, tenant_id=tenant_id, automation_id=automation_id, due_at=nxt, now=now
    )


# -- firing ---------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """How missed firings are handled."""

    missed: MissedPolicy = "once"
    grace: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class Firing:
    """A firing in progress across transactions: its time and the last contact done."""

    fire_at: datetime
    after: str | None = None
    started: int = 0


def choose_fire_time(
    cron: str, timezone: str, stored_next: datetime, now: datetime, policy: Policy
) -> datetime | None:
    """Which due time to fire now (None: skip what is due) under the missed-firings policy."""
    if policy.missed == "all":
        return stored_next
    latest = max(latest_due(cron, timezone, now), stored_next)
    if policy.missed == "skip" and now - latest > policy.grace:
        return None
    return latest


@dataclass
class _Page:
    """What one page of a firing read: the schedule, the automation, the contacts."""

    sched: RowMapping | None
    automation: RowMapping | None
    loaded: LoadedDefinition | None = None
    contacts: list[RowMapping] = field(default_factory=list)


def _read_page(
    conn: Connection,
    task: Mapping[str, Any],
    firing: Firing | None,
    now: datetime,
    policy: Policy,
) -> tuple[_Page, Firing | None]:
    automation_id = schedule_store.task_automation(conn, task["id"])
    sched = schedule_store.get(conn, automation_id) if automation_id else None
    automation = (
        automation_store.get_automation(conn, task["tenant_id"], automation_id)
        if automation_id
        else None
    )
    page = _Page(sched, automation)
    if sched is None or automation is None or not sched["enabled"] or not automation["enabled"]:
        return page, None
    if firing is None:
        if sched["next_fire_at"] > now:  # woken early: nothing to fire
            return page, None
        fire_at = choose_fire_time(
            sched["cron"], sched["timezone"], sched["next_fire_at"], now, policy
        )
        if fire_at is None:
            return page, None
        firing = Firing(fire_at)
    page.loaded = definitions.load(conn, automation["current_version_id"])
    if page.loaded.definition.trigger.audience is not None:
        page.contacts = contact_store.iter_contacts(
            conn, automation["tenant_id"], after=firing.after, limit=PAGE
        )
    return page, firing


def fire_schedule(
    db: Database,
    task: Mapping[str, Any],
    token: str,
    clock: Callable[[], datetime],
    lease: timedelta,
    policy: Policy,
    firing: Firing | None,
) -> Firing | None:
    """Do one page of a schedule task; return the firing to continue, or None when done.

    A page is read (schedule, automation, up to ``PAGE`` contacts), its
    audience and concurrency keys evaluated with no transaction open (each
    contact under its own budget, the page under ``PAGE_CPU_FACTOR`` times the
    expression timeout: contacts it did not reach are the next page's), then
    its runs are started in one write transaction fenced on the task's lease.

    Raises:
        LeaseLost: the task was taken over or replaced (the automation changed).
    """
    now = clock()
    with db.read() as conn:
        page, firing = _read_page(conn, task, firing, now, policy)
    if firing is None or page.loaded is None:
        with db.transaction() as conn:
            task_store.fence(conn, task["id"], token, now + lease)
            _settle_idle(conn, task, page, now, policy)
        return None
    assert page.automation is not None
    assert page.sched is not None
    starts, reached = _choose(page, firing)
    with db.transaction() as conn:
        task_store.fence(conn, task["id"], token, now + lease)
        current = schedule_store.get(conn, page.automation["id"])
        if current is None or current["next_fire_at"] != page.sched["next_fire_at"]:
            return firing  # the schedule moved meanwhile: read it again
        done, firing = _fire_page(conn, page, firing, starts, reached, now)
        if not done:
            return firing
        cron, tz = page.sched["cron"], page.sched["timezone"]
        nxt = next_fire(cron, tz, firing.fire_at)
        if nxt <= now:
            # Only with the `all` policy: the next missed time fires in this same job,
            # still under the lease (a worker taking over reads it from the row).
            _move_on(conn, None, page.sched, firing.fire_at, nxt, now)
            return Firing(nxt)
        _move_on(conn, task, page.sched, firing.fire_at, nxt, now)
    return None


def _settle_idle(
    conn: Connection, task: Mapping[str, Any], page: _Page, now: datetime, policy: Policy
) -> None:
    """Nothing to fire: the schedule is gone or off, woken early, or skips what it missed."""
    sched, automation = page.sched, page.automation
    if sched is None or automation is None or not sched["enabled"] or not automation["enabled"]:
        task_store.delete_task(conn, task["id"])
    elif sched["next_fire_at"] > now:  # woken early: sleep on
        task_store.reschedule(conn, task["id"], sched["next_fire_at"])
    else:  # the `skip` policy, and what is due is too late
        _move_on(conn, task, sched, None, next_fire(sched["cron"], sched["timezone"], now), now)
        log.warning("schedule of %s: missed firings skipped", automation["name"])


def _move_on(
    conn: Connection,
    task: Mapping[str, Any] | None,
    sched: RowMapping,
    fired_at: datetime | None,
    nxt: datetime,
    now: datetime,
) -> None:
    """Store the next firing time and, given the task, make it due then (releasing it)."""
    schedule_store.record_firing(
        conn,
        sched["automation_id"],
        expected_next=sched["next_fire_at"],
        fired_at=fired_at,
        next_fire_at=nxt,
        now=now,
    )
    if task is not None:
        task_store.reschedule(conn, task["id"], nxt)


def _trigger_event(fire_at: datetime, trigger: Trigger) -> dict[str, Any]:
    return {
        "id": None,
        "name": "schedule",
        "occurred_at": iso(fire_at),
        "payload": {
            "scheduled_at": iso(fire_at),
            "cron": trigger.cron,
            "timezone": trigger.timezone,
        },
    }


def _choose(page: _Page, firing: Firing) -> tuple[list[tuple[str | None, str | None]], int]:
    """The contacts of the page the audience picks, with their concurrency keys (user code).

    Returns ``(contact id, key)`` pairs and how many of the page's contacts were
    considered (all of them, unless the page's share of CPU ran out).
    """
    assert page.loaded is not None
    assert page.automation is not None
    trigger = page.loaded.definition.trigger
    event = _trigger_event(firing.fire_at, trigger)
    limits = sandbox.default_limits()
    until = time.thread_time() + PAGE_CPU_FACTOR * limits.timeout

    def key_for(contact_id: str | None) -> str | None:
        identity = {"type": "contact_id", "value": contact_id} if contact_id else None
        return concurrency_key(page.loaded, event, identity)  # type: ignore[arg-type]

    if trigger.audience is None:
        try:
            with sandbox.using(sandbox.Budget(limits)):
                return [(None, key_for(None))], 0
        except ConveyorError as exc:
            log.warning("schedule of %s: concurrency key failed: %s", page.automation["name"], exc)
            return [(None, None)], 0
    chosen: list[tuple[str | None, str | None]] = []
    reached = 0
    for contact in page.contacts:
        if chosen and time.thread_time() > until:
            break  # the rest of the page is the next page
        reached += 1
        scope = {"contact": contact_view(contact), "now": firing.fire_at, "trigger": event}
        try:
            with sandbox.using(sandbox.Budget(limits, deadline=until)):
                if evaluate_bool(trigger.audience, scope):
                    chosen.append((str(contact["id"]), key_for(str(contact["id"]))))
        except ConveyorError as exc:
            log.warning(
                "schedule of %s: audience failed for a contact: %s", page.automation["name"], exc
            )
    return chosen, reached


def _fire_page(
    conn: Connection,
    page: _Page,
    firing: Firing,
    starts: list[tuple[str | None, str | None]],
    reached: int,
    now: datetime,
) -> tuple[bool, Firing]:
    """Start the runs of one page of the audience; True when the firing is complete."""
    automation, loaded = page.automation, page.loaded
    assert automation is not None
    assert loaded is not None
    trigger = loaded.definition.trigger
    stamp = iso(firing.fire_at)
    event = _trigger_event(firing.fire_at, trigger)
    new = [
        NewRun(
            automation,
            loaded,
            Launch(
                trigger_type="schedule",
                source_type="schedule",
                source_id=automation["id"],
                trigger_event=event,
                identity={"type": "contact_id", "value": contact_id} if contact_id else None,
                idempotency_key=(
                    f"schedule:{stamp}:{contact_id}" if contact_id else f"schedule:{stamp}"
                ),
                contact_id=contact_id,
                created_data={"scheduled_at": stamp},
                concurrency_key=key,
            ),
        )
        for contact_id, key in starts
    ]
    # The page's runs at once (a fixed number of statements); a run whose key
    # is taken (this firing was partly done before) is skipped.
    made = create_runs(conn, tenant_id=automation["tenant_id"], items=new, now=now)
    started = firing.started + sum(run is not None for run in made)
    if trigger.audience is None:
        return True, Firing(firing.fire_at, None, started)
    considered = page.contacts[:reached]
    after = str(considered[-1]["id"]) if considered else firing.after
    complete = reached == len(page.contacts) and len(page.contacts) < PAGE
    return complete, Firing(firing.fire_at, after, started)
