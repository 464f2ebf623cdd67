"""Waits for events: delivering an ingested event to the runs waiting for it.

An event and a wait's timeout race through one compare-and-set on the wait
row (``conveyor.store.waits``): delivery sets ``received`` and wakes the step;
the step's own timer, resumed at ``timeout_at``, sets ``timed_out``. Exactly
one of them updates the row. A matching event that finds the wait already
timed out is written into the run's history as ``wait.late_event_ignored``
and changes nothing else.

Locks: delivery takes a run's task row first, then its wait, step and run
rows, the order a worker's round takes them (and ``cancel_run``), so a
delivery and a round of the same run queue up instead of deadlocking.
(Within one batch the runs are locked in run order; a worker's round that
holds two of them in the other order can still deadlock with it on
PostgreSQL, which then aborts one of the two: the round is retried, the
ingestion request fails as a whole and can be sent again.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import Environment, TemplateError, meta
from sqlalchemy import Connection, RowMapping

from conveyor.actions.wait_for_event import event_output
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

# A matching event is recorded as late on waits that timed out at most this
# long ago; older timeouts are not looked at, so a contact's years of history
# do not slow down every event.
LATE_EVENT_WINDOW = timedelta(days=7)
_CACHE_KEY = "conveyor_wait_names"


@lru_cache(maxsize=4096)
def _names_used(expression: str) -> frozenset[str]:
    """The top-level names an expression reads (so delivery loads only what it needs)."""
    try:
        return frozenset(
            meta.find_undeclared_variables(Environment().parse(f"{{{{ {expression} }}}}"))
        )
    except TemplateError:
        return frozenset({"steps", "vars", "contact"})  # cannot tell: load everything


def _maybe_waited(conn: Connection, tenant_id: str, name: str) -> bool:
    """Whether any wait of this tenant ever named this event, cached per transaction.

    Events nobody waits for (page views, say) then cost one indexed look per
    batch instead of one per event.
    """
    txn = conn.get_transaction()
    cached = conn.info.get(_CACHE_KEY)
    if cached is None or cached[0] is not txn:
        cached = (txn, {})
        conn.info[_CACHE_KEY] = cached
    known: dict[tuple[str, str], bool] = cached[1]
    key = (tenant_id, name)
    if key not in known:
        known[key] = wait_store.any_for_name(conn, tenant_id, name)
    return known[key]


class _Scopes:
    """What ``match`` expressions of a batch's candidate waits read, loaded once for all.

    The steps (for ``steps`` and ``vars``) and the contacts (for ``contact``)
    of every candidate run whose ``match`` uses them come in one query each,
    the first time one is needed.
    """

    def __init__(self, conn: Connection, tenant_id: str, found: Sequence[RowMapping]) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self.found = found
        self._steps: dict[str, list[RowMapping]] | None = None
        self._contacts: dict[str, RowMapping] | None = None

    def steps(self, run_id: str) -> list[RowMapping]:
        if self._steps is None:
            wanted = sorted(
                {str(w["run_id"]) for w in self.found if w["match"] and _reads_steps(w["match"])}
            )
            self._steps = round_store.load_steps(self.conn, wanted)
        return self._steps.get(str(run_id), [])

    def contact(self, contact_id: Any) -> RowMapping | None:
        if contact_id is None:
            return None
        if self._contacts is None:
            ids = {str(w["run_contact_id"]) for w in self.found if w["run_contact_id"]}
            self._contacts = contact_store.get_contacts(self.conn, self.tenant_id, ids)
        return self._contacts.get(str(contact_id))

    def of(self, wait: RowMapping, event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
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
        loaded = definitions.load(self.conn, wait["version_id"])
        steps: dict[str, Any]
        if used & {"steps", "vars"}:
            steps = {s["step_key"]: s for s in self.steps(wait["run_id"])}
        else:  # build_scope walks every step: give it unfinished ones
            steps = {k: {"status": "pending"} for k in loaded.graph.order}
        contact = self.contact(wait["run_contact_id"]) if "contact" in used else None
        scope = build_scope(run, loaded.definition, loaded.graph, steps, now, contact)
        scope["event"] = event_output(event)
        return scope

    def matches(self, wait: RowMapping, event: Mapping[str, Any], now: datetime) -> bool:
        """Whether the event satisfies the wait's ``match`` (no ``match``: any event does).

        A ``match`` that fails to evaluate for this event (a missing field, say)
        does not match it: one odd event must not break ingestion.
        """
        if not wait["match"]:
            return True
        try:
            return evaluate_bool(wait["match"], self.of(wait, event, now))
        except ExpressionError:
            return False


def _reads_steps(expression: str) -> bool:
    return bool(_names_used(expression) & {"steps", "vars"})


def deliver_event(conn: Connection, tenant_id: str, event: Mapping[str, Any], now: datetime) -> int:
    """Offer a newly stored event to the open waits it matches; return how many it resumed.

    ``event`` has ``id``, ``name``, ``contact_id``, ``identity``, ``payload`` and
    ``occurred_at``. Runs in the ingesting transaction. A batch is cheaper
    through ``deliver_events``.
    """
    return deliver_events(conn, tenant_id, [event], now)


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


def deliver_events(
    conn: Connection, tenant_id: str, events: Sequence[Mapping[str, Any]], now: datetime
) -> int:
    """Offer a batch of newly stored events to the waits they match; return how many resumed.

    A fixed number of statements per batch (find the candidate waits, lock
    their runs' tasks, one compare-and-set for all of them, make the winners'
    steps due and queue their runs, notify the workers), plus a history line
    per late event. In batch
    order, the first matching event takes an open wait; a wait that timed out
    records every matching event as ``wait.late_event_ignored``.
    """
    offered = [e for e in events if _maybe_waited(conn, tenant_id, e["name"])]
    if not offered:
        return 0
    found = wait_store.candidates(
        conn,
        tenant_id,
        names={e["name"] for e in offered},
        contact_ids={str(e["contact_id"]) for e in offered if e.get("contact_id")},
        identity_values={v for v in map(_value, offered) if v is not None},
        late_since=now - LATE_EVENT_WINDOW,
    )
    # Index the waits by who they listen to, so pairing is linear in the batch.
    by_contact: dict[str, list[RowMapping]] = {}
    by_value: dict[str | None, list[RowMapping]] = {}
    for wait in found:
        if wait["contact_id"] is not None:
            by_contact.setdefault(str(wait["contact_id"]).lower(), []).append(wait)
        else:
            by_value.setdefault(wait["identity_value"], []).append(wait)
    pairs: dict[str, list[Mapping[str, Any]]] = {}  # wait id -> matching events, in order
    by_id = {w["id"]: w for w in found}
    scopes = _Scopes(conn, tenant_id, found)
    for event in offered:
        contact, value = event.get("contact_id"), _value(event)
        near = by_contact.get(str(contact).lower(), []) if contact else []
        near = (
            near + by_value.get(value, []) + (by_value.get(None, []) if value is not None else [])
        )
        for wait in near:
            if _concerns(wait, event) and scopes.matches(wait, event, now):
                pairs.setdefault(wait["id"], []).append(event)
    if not pairs:
        return 0
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
    return len(won)


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
        wait_store.queue_runs(conn, tenant_id, sorted({str(w["run_id"]) for w in winners}), now)
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
