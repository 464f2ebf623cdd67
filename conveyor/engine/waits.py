"""Waits for events: delivering an ingested event to the runs waiting for it.

An event and a wait's timeout race through one compare-and-set on the wait
row (``conveyor.store.waits``): delivery sets ``received`` and wakes the step;
the step's own timer, resumed at ``timeout_at``, sets ``timed_out``. Exactly
one of them updates the row. A matching event that finds the wait already
timed out is written into the run's history as ``wait.late_event_ignored``
and changes nothing else.

Delivery is read, evaluated, then written (``Offer``): the candidate waits
are read before the ingesting transaction, their ``match`` expressions run
with no transaction open, and the write decides. Two things close the gap
between the read and the write. Every waiter a delivery wakes has its run
touched, so a worker's round that read the run before is redone. And a wait
written in the gap is found by the write and woken to look at the stored
events itself, while a wait written after the events sees them when its own
commit looks (``wait_for_event``). On PostgreSQL both sides take a lock per
(tenant, event name) first, so neither can miss the other.

Locks: delivery takes a run's task row first, then its wait, step and run
rows, the order a worker's round takes them (and ``cancel_run``), so a
delivery and a round of the same run queue up instead of deadlocking.
(Within one batch the runs are locked in run order; a worker's round that
holds two of them in the other order can still deadlock with it on
PostgreSQL, which then aborts one of the two: the round is retried, the
ingestion's write is run again.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import Environment, TemplateError, meta
from sqlalchemy import Connection, RowMapping

from conveyor.actions.wait_for_event import event_output
from conveyor.domain import sandbox
from conveyor.domain.errors import ExpressionError
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.times import iso
from conveyor.engine.steps import build_scope
from conveyor.store import contacts as contact_store
from conveyor.store import definitions
from conveyor.store import rounds as round_store
from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store
from conveyor.store import waits as wait_store
from conveyor.store.definitions import LoadedDefinition

# A matching event is recorded as late on waits that timed out at most this
# long ago; older timeouts are not looked at, so a contact's years of history
# do not slow down every event.
LATE_EVENT_WINDOW = timedelta(days=7)


@lru_cache(maxsize=1024)
def _names_used(expression: str) -> frozenset[str]:
    """The top-level names an expression reads (so delivery loads only what it needs)."""
    try:
        return frozenset(
            meta.find_undeclared_variables(Environment().parse(f"{{{{ {expression} }}}}"))
        )
    except (TemplateError, RecursionError):
        return frozenset({"steps", "vars", "contact"})  # cannot tell: load everything


def _reads_steps(expression: str) -> bool:
    return bool(_names_used(expression) & {"steps", "vars"})


def _value(event: Mapping[str, Any]) -> str | None:
    identity = event.get("identity")
    value = identity.get("value") if isinstance(identity, Mapping) else None
    return str(value) if value is not None else None


def _same(a: Any, b: Any) -> bool:
    """Two ids equal as UUIDs (one may come back from the database as another spelling)."""
    return a is not None and b is not None and str(a).lower() == str(b).lower()


def _concerns(wait: RowMapping, event: Mapping[str, Any]) -> bool:
    """Same name, same contact (or identity), and, for an open wait, inside its window."""
    if wait["event_name"] != event["name"]:
        return False
    if wait["contact_id"] is not None:
        if not _same(wait["contact_id"], event.get("contact_id")):
            return False
    elif wait["identity_value"] is not None and wait["identity_value"] != _value(event):
        return False
    return bool(
        wait["status"] != wait_store.WAITING or wait["lookback_from"] <= event["occurred_at"]
    )


@dataclass
class Offer:
    """Delivering a batch of events, in three phases.

    ``read_offer`` (a read transaction) finds the waits the events could
    concern and what their ``match`` expressions read; ``Offer.match`` (no
    transaction: user code) pairs events and waits; ``deliver`` (the ingesting
    write transaction) decides the waits by compare-and-set. A wait written
    between the read and the write is woken to look at the stored events itself.
    """

    tenant_id: str
    events: Sequence[Mapping[str, Any]]  # the events offered, in batch order
    found: Sequence[RowMapping] = ()  # the candidate waits
    steps: Mapping[str, list[RowMapping]] = field(default_factory=dict)
    contacts: Mapping[str, RowMapping] = field(default_factory=dict)
    definitions: Mapping[str, LoadedDefinition] = field(default_factory=dict)
    pairs: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)

    def _scope(self, wait: RowMapping, event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The context of a wait's ``match``: its run's scope (as its steps see it) + ``event``."""
        used = _names_used(wait["match"]) if wait["match"] else frozenset()
        run = {
            "id": wait["run_id"],
            "trigger_event": wait["trigger_event"],
            "identity": wait["identity"],
            "automation_name": wait["automation_name"],
            "version_number": wait["version_number"],
            "created_at": wait["run_created_at"],
        }
        loaded = self.definitions[wait["version_id"]]
        steps: dict[str, Any]
        if used & {"steps", "vars"}:
            steps = {s["step_key"]: s for s in self.steps.get(str(wait["run_id"]), [])}
        else:  # build_scope walks every step: give it unfinished ones
            steps = {k: {"status": "pending"} for k in loaded.graph.order}
        contact_id = wait["run_contact_id"]
        contact = self.contacts.get(str(contact_id)) if contact_id and "contact" in used else None
        scope = build_scope(run, loaded.definition, loaded.graph, steps, now, contact)
        scope["event"] = event_output(event)
        return scope

    def _matches(self, wait: RowMapping, event: Mapping[str, Any], now: datetime) -> bool:
        """Whether the event satisfies the wait's ``match`` (no ``match``: any event does).

        A ``match`` that fails to evaluate for this event (a missing field, or
        over its time or size) does not match it: one odd event must not break
        ingestion.
        """
        if not wait["match"]:
            return True
        try:
            return evaluate_bool(wait["match"], self._scope(wait, event, now))
        except ExpressionError:
            return False

    def match(self, now: datetime, budget: Callable[[], sandbox.Budget]) -> None:
        """Pair each event with the waits it satisfies (user code: no transaction open).

        Each evaluation runs under a budget from ``budget()``. In batch order,
        the first matching event will take an open wait; a wait that timed out
        records every matching event as late.
        """
        # Index the waits by who they listen to, so pairing is linear in the batch.
        by_contact: dict[str, list[RowMapping]] = {}
        by_value: dict[str | None, list[RowMapping]] = {}
        for wait in self.found:
            if wait["contact_id"] is not None:
                by_contact.setdefault(str(wait["contact_id"]).lower(), []).append(wait)
            else:
                by_value.setdefault(wait["identity_value"], []).append(wait)
        for event in self.events:
            contact, value = event.get("contact_id"), _value(event)
            near = by_contact.get(str(contact).lower(), []) if contact else []
            near = (
                near
                + by_value.get(value, [])
                + (by_value.get(None, []) if value is not None else [])
            )
            for wait in near:
                if not _concerns(wait, event):
                    continue
                with sandbox.using(budget()):
                    if self._matches(wait, event, now):
                        self.pairs.setdefault(wait["id"], []).append(event)


def read_offer(
    conn: Connection, tenant_id: str, events: Sequence[Mapping[str, Any]], now: datetime
) -> Offer:
    """Find the waits these events could concern and what their ``match`` reads.

    ``events`` have ``id``, ``name``, ``contact_id``, ``identity``, ``payload``
    and ``occurred_at``. Events nobody ever waited for (page views, say) cost
    one indexed look per name.
    """
    names = {e["name"] for e in events}
    waited = {n for n in names if wait_store.any_for_name(conn, tenant_id, n)}
    offered = [e for e in events if e["name"] in waited]
    if not offered:
        return Offer(tenant_id, offered)
    found = _candidates(conn, tenant_id, offered, now)
    wanted = sorted({str(w["run_id"]) for w in found if w["match"] and _reads_steps(w["match"])})
    contacts = {str(w["run_contact_id"]) for w in found if w["run_contact_id"]}
    return Offer(
        tenant_id,
        offered,
        found,
        steps=round_store.load_steps(conn, wanted),
        contacts=contact_store.get_contacts(conn, tenant_id, contacts) if contacts else {},
        definitions={
            w["version_id"]: definitions.load(conn, w["version_id"]) for w in found if w["match"]
        },
    )


def _candidates(
    conn: Connection, tenant_id: str, events: Sequence[Mapping[str, Any]], now: datetime
) -> Sequence[RowMapping]:
    return wait_store.candidates(
        conn,
        tenant_id,
        names={e["name"] for e in events},
        contact_ids={str(e["contact_id"]) for e in events if e.get("contact_id")},
        identity_values={v for v in map(_value, events) if v is not None},
        late_since=now - LATE_EVENT_WINDOW,
    )


def deliver(
    conn: Connection, offer: Offer, stored: Sequence[Mapping[str, Any]], now: datetime
) -> int:
    """Decide the waits ``offer`` paired with events that were ``stored``; return how many resumed.

    Runs in the ingesting write transaction; no user code. A fixed number of
    statements (lock the event names, lock the runs' tasks, one compare-and-set
    for all the waits, make the winners' steps due and queue their runs,
    notify the workers, look for waits written since the read), plus a history
    line per late event.
    """
    tenant_id = offer.tenant_id
    kept = {e["id"] for e in stored}
    # Serialise with new waits for the same names (their commit looks for events).
    wait_store.lock_names(conn, tenant_id, {e["name"] for e in stored})
    pairs = {wait_id: [e for e in evs if e["id"] in kept] for wait_id, evs in offer.pairs.items()}
    pairs = {wait_id: evs for wait_id, evs in pairs.items() if evs}
    by_id = {w["id"]: w for w in offer.found}
    opened = {
        i: evs[0]["id"] for i, evs in pairs.items() if by_id[i]["status"] == wait_store.WAITING
    }
    won = _receive(conn, tenant_id, [by_id[i] for i in opened], opened, now)
    for wait_id, matched in pairs.items():
        wait = by_id[wait_id]
        if wait_id in won:
            continue
        if wait_id in opened:  # lost the compare-and-set: to the timer, or to another event
            fresh = wait_store.get_wait(conn, wait["run_id"], wait["step_key"])
            if fresh is None or fresh["status"] != wait_store.TIMED_OUT:
                continue
        for event in matched:
            _record_late(conn, tenant_id, wait, event, now)
    _wake_new_waits(conn, tenant_id, offer, stored, now)
    return len(won)


def _wake_new_waits(
    conn: Connection,
    tenant_id: str,
    offer: Offer,
    stored: Sequence[Mapping[str, Any]],
    now: datetime,
) -> None:
    """Waits written after the offer was read did not see these events: wake them to look."""
    if not stored:
        return
    known = {w["id"] for w in offer.found}
    new = [
        w
        for w in _candidates(conn, tenant_id, stored, now)
        if w["id"] not in known
        and w["status"] == wait_store.WAITING
        and any(_concerns(w, e) for e in stored)
    ]
    if not new:
        return
    wait_store.lock_run_tasks(conn, sorted({str(w["run_id"]) for w in new}))
    wait_store.make_steps_due(conn, [(w["run_id"], w["step_key"]) for w in new], now)
    woken = sorted({str(w["run_id"]) for w in new})
    run_store.touch(conn, woken, now)
    wait_store.queue_runs(conn, tenant_id, woken, now)
    task_store.notify(conn)


def _receive(
    conn: Connection,
    tenant_id: str,
    waiting: Sequence[RowMapping],
    decided: Mapping[str, str],
    now: datetime,
) -> set[str]:
    """Decide open waits ``received`` (one compare-and-set for all) and wake the winners.

    The runs' tasks are locked first, in run order, then the waits, then the
    steps: the order a worker's round locks in. Only a wait whose
    compare-and-set won has its step made due and its run queued.
    """
    if not waiting:
        return set()
    wait_store.lock_run_tasks(conn, sorted({str(w["run_id"]) for w in waiting}))
    won = wait_store.receive_many(conn, decided, now)
    winners = [w for w in waiting if w["id"] in won]
    if winners:
        # What wake_step does for one step, for all of them at once.
        wait_store.make_steps_due(conn, [(w["run_id"], w["step_key"]) for w in winners], now)
        woken = sorted({str(w["run_id"]) for w in winners})
        run_store.touch(conn, woken, now)  # a round that read these runs before is redone
        wait_store.queue_runs(conn, tenant_id, woken, now)
        task_store.notify(conn)
    return won


def _record_late(
    conn: Connection,
    tenant_id: str,
    wait: RowMapping,
    event: Mapping[str, Any],
    now: datetime,
) -> None:
    """The wait timed out first: the event reopens nothing, but the run's history says so."""
    occurred = event["occurred_at"]
    data = {
        "wait_id": wait["id"],
        "event_id": event["id"],
        "event_name": event["name"],
        "occurred_at": iso(occurred) if isinstance(occurred, datetime) else occurred,
    }
    # The run row's lock orders history lines; take its task's first, as a round does.
    task_store.lock_run_tasks(conn, wait["run_id"])
    run_store.append_events(
        conn,
        run_id=wait["run_id"],
        tenant_id=tenant_id,
        events=[
            {
                "type": "wait.late_event_ignored",
                "step_key": wait["step_key"],
                "data": data,
                "created_at": now,
            }
        ],
        run_values={"updated_at": now},
    )
