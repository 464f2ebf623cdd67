"""Event ingestion and event triggers.

``ingest_events`` stores a batch and answers for each item: ``accepted``
(stored now), ``duplicate`` (its id was stored before, or earlier in the same
batch: nothing happens again) or ``rejected`` (with a code and a reason; the
other items are not affected).

For every accepted event, each enabled automation with an event trigger of
that name whose ``filter`` holds starts one run, with the event's id as the
run's idempotency key: the same event can never start a second run of the
same automation. A filter (or concurrency key) that fails to evaluate starts
no run for that automation and is reported on the item; it rejects nothing.
Every accepted event is then offered to the runs waiting for one
(``conveyor.engine.waits``).

No user code runs inside a transaction. A batch is: its identities resolved
(a write transaction only when one names a contact for the first time); a
read transaction (known ids, the listening automations, contacts, the waits
the events could concern); filters, concurrency keys and waits' ``match``
evaluated with none open, each (event, automation) and each (event, wait)
under its own budget, all of them under ``REQUEST_CPU_FACTOR`` times
``CONVEYOR_EXPRESSION_TIMEOUT`` of CPU in all; then one write transaction
stores the events, starts the runs and decides the waits (run again whole if
PostgreSQL aborts it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor import metrics
from conveyor.domain import sandbox
from conveyor.domain.errors import ConveyorError, NotFound
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, NewRun, concurrency_key, create_runs
from conveyor.engine.steps import contact_view
from conveyor.engine.waits import Offer, deliver, read_offer
from conveyor.services.identity import Resolved, resolve_identities
from conveyor.services.pagination import TOTAL_CAP, capped_page
from conveyor.store import automations as automation_store
from conveyor.store import contacts as contact_store
from conveyor.store import definitions
from conveyor.store import events as store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

MAX_BATCH = 1000
# Runs one request may start (CONVEYOR_MAX_RUNS_PER_REQUEST): 1,000 events that
# 20 automations listen for would otherwise start 20,000 in one transaction.
MAX_RUNS_PER_REQUEST = 2000
# One request's filters, keys and matches may use this many times the
# expression timeout of CPU in all; past it, what is left fails to evaluate.
REQUEST_CPU_FACTOR = 4


class EventNotFound(NotFound):
    """The event was not found."""

    code = "event_not_found"


class TooManyRuns(ConveyorError):
    """Storing this event would start more runs than one request may."""

    code = "too_many_runs"


ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass(frozen=True)
class NewEvent:
    """One event of a batch, as checked by the wire schema."""

    index: int  # its position in the request
    id: str
    name: str
    identity: Mapping[str, Any] | None
    payload: Mapping[str, Any]
    occurred_at: datetime | None  # None: now


@dataclass
class ItemResult:
    """What became of one item of a batch."""

    index: int
    id: str | None
    status: str
    code: str | None = None
    reason: str | None = None
    errors: list[dict[str, Any]] | None = None
    contact_id: str | None = None
    runs_started: list[dict[str, Any]] = field(default_factory=list)
    trigger_errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The wire form: optional keys only when they say something."""
        out: dict[str, Any] = {"index": self.index, "id": self.id, "status": self.status}
        if self.status == REJECTED:
            out["code"] = self.code
            out["reason"] = self.reason
            if self.errors is not None:
                out["errors"] = self.errors
            return out
        if self.status == ACCEPTED:
            out["contact_id"] = self.contact_id
        out["runs_started"] = self.runs_started
        if self.trigger_errors:
            out["trigger_errors"] = self.trigger_errors
        return out


def rejected(
    index: int,
    event_id: str | None,
    code: str,
    reason: str,
    errors: list[dict[str, Any]] | None = None,
) -> ItemResult:
    """The result of an item refused before it reached ``ingest_events``."""
    return ItemResult(index, event_id, REJECTED, code=code, reason=reason, errors=errors)


@dataclass
class _Stored:
    """An event on its way to be stored, with the runs it is to start."""

    event: NewEvent
    resolved: Resolved | None
    occurred_at: datetime
    # (automation, definition, concurrency key): a run to start once it is stored
    starts: list[tuple[RowMapping, LoadedDefinition, str | None]] = field(default_factory=list)
    trigger_errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def contact_id(self) -> str | None:
        return self.resolved.contact_id if self.resolved else None

    def trigger_event(self) -> dict[str, Any]:
        return {
            "id": self.event.id,
            "name": self.event.name,
            "payload": dict(self.event.payload),
            "occurred_at": iso(self.occurred_at),
            "identity": self.resolved.identity.as_dict() if self.resolved else None,
        }

    def delivered(self) -> dict[str, Any]:
        """The event as delivery to waits takes it."""
        return {
            "id": self.event.id,
            "name": self.event.name,
            "contact_id": self.contact_id,
            "identity": self.resolved.identity.as_dict() if self.resolved else None,
            "payload": dict(self.event.payload),
            "occurred_at": self.occurred_at,
        }


def ingest_events(
    db: Database,
    tenant_id: str,
    items: Sequence[NewEvent],
    now: datetime,
    *,
    max_runs: int = MAX_RUNS_PER_REQUEST,
) -> list[ItemResult]:
    """Store a batch of events, start the runs they trigger, deliver them to waits.

    Returns one result per item, in the order given. Opens and commits its own
    transactions (see the module docstring). At most ``max_runs`` runs are
    started: the items that would start more are rejected whole
    (``too_many_runs``, not stored), so the client can send them again.
    """
    results: dict[int, ItemResult] = {}
    fresh: list[NewEvent] = []
    first: dict[str, int] = {}  # id -> index of its first item: that one is considered
    for item in items:
        if item.id not in first:
            first[item.id] = item.index
            fresh.append(item)
    with db.read() as conn:
        known = store.existing_ids(conn, tenant_id, first)
        identities = _identities(conn, tenant_id, fresh, now, create=False)
    for item in fresh:
        if item.id in known:
            results[item.index] = ItemResult(item.index, item.id, DUPLICATE)
    fresh = [i for i in fresh if i.id not in known]
    if any(r is None for r in identities.values()):  # someone seen for the first time
        identities = db.retrying(lambda conn: _identities(conn, tenant_id, fresh, now, create=True))
    stored: list[_Stored] = []
    for item in fresh:
        resolution = identities.get(item.index)
        if isinstance(resolution, ConveyorError):
            results[item.index] = rejected(item.index, item.id, resolution.code, resolution.detail)
        else:
            stored.append(_Stored(item, resolution, item.occurred_at or now))
    with db.read() as conn:
        listeners = _event_automations(conn, tenant_id, {s.event.name for s in stored})
        contacts = contact_store.get_contacts(
            conn, tenant_id, {s.contact_id for s in stored if s.contact_id}
        )
        offer = read_offer(conn, tenant_id, [s.delivered() for s in stored], now)
    budget = request_budgets()
    _evaluate_triggers(stored, listeners, contacts, budget)
    stored = _within(stored, max_runs, results)
    offer.events = [e for e in offer.events if e["id"] in {s.event.id for s in stored}]
    offer.match(now, budget)
    written = db.retrying(lambda conn: _write(conn, tenant_id, stored, offer, now))
    results.update(written)
    for item in items:
        if item.index not in results:  # a repeat, within the batch, of an earlier item
            results[item.index] = _repeat(item, results[first[item.id]])
    answers = [results[i.index] for i in items]
    _count(answers)
    return answers


def _count(answers: Sequence[ItemResult]) -> None:
    """Count a batch's outcomes once it is stored (one increment per outcome seen)."""
    by_status: dict[str, int] = defaultdict(int)
    for answer in answers:
        by_status[answer.status] += 1
    for status, n in by_status.items():
        metrics.EVENTS_INGESTED.labels(status).inc(n)


def _within(stored: list[_Stored], max_runs: int, results: dict[int, ItemResult]) -> list[_Stored]:
    """The items whose runs fit in ``max_runs`` (in request order); the others are rejected."""
    kept: list[_Stored] = []
    started = 0
    for s in stored:
        if started + len(s.starts) > max_runs:
            results[s.event.index] = rejected(
                s.event.index,
                s.event.id,
                TooManyRuns.code,
                f"the request would start more than {max_runs} runs: send this event again",
            )
            continue
        started += len(s.starts)
        kept.append(s)
    return kept


def request_budgets() -> Callable[[], sandbox.Budget]:
    """Budgets for one request's evaluations: each its own, all within the request's share."""
    limits = sandbox.default_limits()
    until = time.thread_time() + REQUEST_CPU_FACTOR * limits.timeout
    return lambda: sandbox.Budget(limits, deadline=until)


def _identities(
    conn: Connection, tenant_id: str, items: Sequence[NewEvent], now: datetime, *, create: bool
) -> dict[int, Resolved | ConveyorError | None]:
    """Each item's resolved identity (by index); without ``create``, None for a first sight."""
    with_identity = [i for i in items if i.identity is not None]
    resolutions = resolve_identities(
        conn,
        tenant_id,
        [i.identity for i in with_identity if i.identity is not None],
        now,
        create=create,
    )
    return {i.index: r for i, r in zip(with_identity, resolutions, strict=True)}


def _repeat(item: NewEvent, earlier: ItemResult) -> ItemResult:
    """A later item with the id of an earlier one: a duplicate, or rejected with it."""
    if earlier.status != REJECTED:
        return ItemResult(item.index, item.id, DUPLICATE)
    reason = f"same id as event {earlier.index}, which was rejected: {earlier.reason}"
    return rejected(item.index, item.id, earlier.code or "rejected", reason)


def _row(tenant_id: str, s: _Stored, now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "id": s.event.id,
        "name": s.event.name,
        "contact_id": s.contact_id,
        "identity": s.resolved.identity.as_dict() if s.resolved else None,
        "payload": dict(s.event.payload),
        "occurred_at": s.occurred_at,
        "received_at": now,
    }


def _event_automations(
    conn: Connection, tenant_id: str, names: set[str]
) -> dict[str, list[tuple[RowMapping, LoadedDefinition]]]:
    """The enabled event-triggered automations, by the event name they listen for."""
    by_name: dict[str, list[tuple[RowMapping, LoadedDefinition]]] = defaultdict(list)
    if not names:
        return by_name
    for automation in automation_store.list_enabled_by_trigger(conn, tenant_id, "event"):
        loaded = definitions.load(conn, automation["current_version_id"])
        trigger = loaded.definition.trigger
        if trigger.type == "event" and trigger.event in names:
            by_name[trigger.event].append((automation, loaded))
    for listeners in by_name.values():
        listeners.sort(key=lambda pair: str(pair[0]["name"]))
    return by_name


def _trigger_error(automation: RowMapping, exc: ConveyorError) -> dict[str, Any]:
    return {
        "automation_id": str(automation["id"]),
        "automation_name": automation["name"],
        "code": exc.code,
        "detail": exc.detail,
    }


def _evaluate_triggers(
    stored: Sequence[_Stored],
    listeners: Mapping[str, list[tuple[RowMapping, LoadedDefinition]]],
    contacts: Mapping[str, RowMapping],
    budget: Callable[[], sandbox.Budget],
) -> None:
    """Decide, for each (event, automation listening for it), whether a run starts, and its key.

    User code (filters, concurrency keys): run with no transaction open, each
    pair under its own budget.
    """
    for s in stored:
        heard = listeners.get(s.event.name)
        if not heard:
            continue
        trigger_event = s.trigger_event()
        identity = trigger_event["identity"]
        contact = contacts.get(s.contact_id) if s.contact_id else None
        scope = {
            "event": trigger_event,
            "trigger": trigger_event,
            "identity": identity,
            "contact": contact_view(contact),
        }
        for automation, loaded in heard:
            condition = loaded.definition.trigger.filter
            try:
                with sandbox.using(budget()):
                    if condition and not evaluate_bool(condition, scope):
                        continue
                    key = concurrency_key(loaded, trigger_event, identity)
            except ConveyorError as exc:  # an expression error, a timeout, a bad key
                s.trigger_errors.append(_trigger_error(automation, exc))
                continue
            s.starts.append((automation, loaded, key))


def _write(
    conn: Connection, tenant_id: str, stored: Sequence[_Stored], offer: Offer, now: datetime
) -> dict[int, ItemResult]:
    """Store the events, start their runs, decide the waits: no user code (may run twice)."""
    inserted = store.insert_events(conn, [_row(tenant_id, s, now) for s in stored])
    results: dict[int, ItemResult] = {}
    accepted = []
    starts: list[tuple[ItemResult, NewRun]] = []
    for s in stored:
        if s.event.id not in inserted:  # a concurrent request stored it first
            results[s.event.index] = ItemResult(s.event.index, s.event.id, DUPLICATE)
            continue
        accepted.append(s)
        result = ItemResult(s.event.index, s.event.id, ACCEPTED, contact_id=s.contact_id)
        result.trigger_errors = list(s.trigger_errors)
        results[s.event.index] = result
        trigger_event = s.trigger_event()
        for automation, loaded, key in s.starts:
            launch = Launch(
                trigger_type="event",
                source_type="event",
                source_id=s.event.id,
                trigger_event=trigger_event,
                identity=trigger_event["identity"],
                idempotency_key=s.event.id,
                contact_id=s.contact_id,
                concurrency_key=key,
            )
            starts.append((result, NewRun(automation, loaded, launch)))
    # Every run of the request in one go (a fixed number of statements).
    runs = create_runs(conn, tenant_id=tenant_id, items=[new for _, new in starts], now=now)
    for (result, new), run in zip(starts, runs, strict=True):
        if run is not None:
            result.runs_started.append(
                {
                    "run_id": run["id"],
                    "automation_id": str(new.automation["id"]),
                    "automation_name": new.automation["name"],
                }
            )
    # In request order: where two events match one open wait, the first takes it.
    deliver(conn, offer, [s.delivered() for s in accepted], now)
    return results


def event_view(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """An event as the API shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "contact_id": str(row["contact_id"]) if row["contact_id"] is not None else None,
        "identity": row["identity"],
        "payload": row["payload"],
        "occurred_at": iso(row["occurred_at"]),
        "received_at": iso(row["received_at"]),
    }


def get_event(conn: Connection, tenant_id: str, event_id: str) -> dict[str, Any]:
    """One stored event; ``EventNotFound`` if the tenant has none with this id."""
    row = store.get_event(conn, tenant_id, event_id)
    if row is None:
        raise EventNotFound(f"event {event_id!r} not found")
    return event_view(row)


def list_events(
    conn: Connection,
    tenant_id: str,
    *,
    name: str | None = None,
    contact_id: str | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    limit: int,
    offset: int = 0,
    after: store.Position | None = None,
) -> dict[str, Any]:
    """A page of events, latest first: ``{items, total, total_exact, last}``.

    ``total`` is exact up to ``TOTAL_CAP`` matches, else a lower bound with
    ``total_exact`` false; ``last`` is the keyset position of the page's last
    item when more follow.
    """
    rows, counted = store.list_events(
        conn,
        tenant_id,
        name=name,
        contact_id=contact_id,
        occurred_after=occurred_after,
        occurred_before=occurred_before,
        limit=limit + 1,
        offset=offset,
        after=after,
        count_cap=TOTAL_CAP,
    )
    return capped_page(
        rows, counted, limit=limit, offset=offset, view=event_view, position_column="occurred_at"
    )
