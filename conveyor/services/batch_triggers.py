"""Batch triggers: up to 1,000 runs of one automation in one request.

``trigger_batch`` answers for each item: ``accepted`` (its run was created),
``duplicate`` (its ``idempotency_key`` names a run of the automation already,
or an earlier item of the request took it: that run's id is given back) or
``rejected`` (with a code and a reason; the other items are not affected).

The items are checked in request order, as the single trigger checks one
request: a key naming an existing run makes a duplicate before anything else
(whatever its identity); then the identity is resolved (``invalid_identity``,
``unknown_contact``); a key taken by an earlier item that was not rejected
makes a duplicate of that item (or rejects with it); then the concurrency key
is evaluated (user code); at most ``max_runs`` runs are created, the items
past that rejected with ``too_many_runs``.

No user code runs inside a transaction, as in event ingestion
(``conveyor.services.events``): a read transaction (the automation, the runs
the keys name, the identities); a write transaction only when an identity
names a contact for the first time; the concurrency keys evaluated with none
open, each under its own budget and all within the request's share; then one
write transaction creates every run with a fixed number of statements
(``conveyor.engine.launch.create_runs``), run again whole if PostgreSQL
aborts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain import sandbox
from conveyor.domain.errors import AutomationDisabled, AutomationNotFound, ConveyorError
from conveyor.engine.launch import Launch, NewRun, concurrency_key, create_runs, manual_event
from conveyor.services.events import MAX_RUNS_PER_REQUEST, TooManyRuns, request_budgets
from conveyor.services.identity import Resolved, resolve_identities
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store import runs as run_store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

MAX_BATCH = 1000

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


@dataclass(frozen=True)
class BatchItem:
    """One run asked for, as checked by the wire schema."""

    index: int  # its position in the request
    payload: Mapping[str, Any]
    identity: Mapping[str, Any] | None
    idempotency_key: str | None


@dataclass
class TriggerResult:
    """What became of one item of a batch."""

    index: int
    status: str
    idempotency_key: str | None
    run_id: str | None = None
    contact_id: str | None = None
    code: str | None = None
    reason: str | None = None
    errors: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The wire form: optional keys only when they say something."""
        out: dict[str, Any] = {
            "index": self.index,
            "status": self.status,
            "idempotency_key": self.idempotency_key,
        }
        if self.status == REJECTED:
            out["code"] = self.code
            out["reason"] = self.reason
            if self.errors is not None:
                out["errors"] = self.errors
            return out
        out["run_id"] = self.run_id
        if self.status == ACCEPTED:
            out["contact_id"] = self.contact_id
        return out


def rejected(
    index: int,
    key: str | None,
    code: str,
    reason: str,
    errors: list[dict[str, Any]] | None = None,
) -> TriggerResult:
    """The result of an item refused (by the wire schema, or here)."""
    return TriggerResult(index, REJECTED, key, code=code, reason=reason, errors=errors)


@dataclass
class _Start:
    """An item that is to create a run."""

    item: BatchItem
    resolved: Resolved | None
    trigger_event: dict[str, Any]
    key: str | None = None  # the concurrency key

    @property
    def identity(self) -> dict[str, Any] | None:
        return self.resolved.identity.as_dict() if self.resolved else None


def trigger_batch(
    db: Database,
    tenant_id: str,
    automation_ref: str,
    items: Sequence[BatchItem],
    now: datetime,
    *,
    source_type: str,
    source_id: str | None,
    max_runs: int = MAX_RUNS_PER_REQUEST,
) -> list[TriggerResult]:
    """Start a run of the automation's current version for each item; one result each, in order.

    Raises:
        AutomationNotFound: the tenant has no such automation.
        AutomationDisabled: it is disabled and some item would start a run
            (items whose keys all name existing runs are answered as duplicates,
            as the single trigger answers a repeat).
    """
    with db.read() as conn:
        automation = automation_store.get_automation(conn, tenant_id, automation_ref)
        if automation is None:
            raise AutomationNotFound(f"automation {automation_ref} not found")
        keys = [i.idempotency_key for i in items if i.idempotency_key is not None]
        existing = run_store.find_by_idempotency_keys(conn, tenant_id, automation["id"], keys)
        results: dict[int, TriggerResult] = {}
        for item in items:
            run = existing.get(item.idempotency_key) if item.idempotency_key else None
            if run is not None:
                results[item.index] = _duplicate(item, str(run["id"]))
        fresh = [i for i in items if i.index not in results]
        if fresh and not automation["enabled"]:
            raise AutomationDisabled(f"automation {automation['name']} is disabled")
        loaded = definitions.load(conn, automation["current_version_id"]) if fresh else None
        identities = _identities(conn, tenant_id, fresh, now, create=False)
    if loaded is None:
        return [results[i.index] for i in items]
    if any(r is None for r in identities.values()):  # someone seen for the first time
        identities = db.retrying(lambda conn: _identities(conn, tenant_id, fresh, now, create=True))
    repeats: dict[int, int] = {}  # item index -> index of the earlier item with its key
    starts = _starts(fresh, identities, loaded, results, repeats, now, max_runs)
    written = db.retrying(
        lambda conn: _write(
            conn, tenant_id, automation, loaded, starts, now, source_type, source_id
        )
    )
    results.update(written)
    for item in fresh:
        if item.index in repeats:
            results[item.index] = _repeat(item, results[repeats[item.index]])
    return [results[i.index] for i in items]


def _identities(
    conn: Connection, tenant_id: str, items: Sequence[BatchItem], now: datetime, *, create: bool
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


def _starts(
    fresh: Sequence[BatchItem],
    identities: Mapping[int, Resolved | ConveyorError | None],
    loaded: LoadedDefinition,
    results: dict[int, TriggerResult],
    repeats: dict[int, int],
    now: datetime,
    max_runs: int,
) -> list[_Start]:
    """The items that create a run, in order; the others' results go to ``results``.

    A repeat of the key of an earlier item (one not rejected for its identity)
    goes to ``repeats`` instead: its result follows that item's. User code
    (concurrency keys) runs here, with no transaction open.
    """
    budget = request_budgets()
    taken: dict[str, int] = {}  # idempotency key -> the item that claimed it
    starts: list[_Start] = []
    for item in fresh:
        resolution = identities.get(item.index)
        if isinstance(resolution, ConveyorError):
            results[item.index] = rejected(
                item.index, item.idempotency_key, resolution.code, resolution.detail
            )
            continue
        if item.idempotency_key is not None:
            if item.idempotency_key in taken:
                repeats[item.index] = taken[item.idempotency_key]
                continue
            taken[item.idempotency_key] = item.index
        start = _Start(item, resolution, manual_event(item.payload, now))
        if not _evaluate_key(start, loaded, budget, results):
            continue
        if len(starts) >= max_runs:
            results[item.index] = rejected(
                item.index,
                item.idempotency_key,
                TooManyRuns.code,
                f"the request would start more than {max_runs} runs: send this item again",
            )
            continue
        starts.append(start)
    return starts


def _evaluate_key(
    start: _Start,
    loaded: LoadedDefinition,
    budget: Callable[[], sandbox.Budget],
    results: dict[int, TriggerResult],
) -> bool:
    """Evaluate the item's concurrency key (if the automation has one); False if it failed."""
    if loaded.definition.concurrency is None:
        return True
    try:
        with sandbox.using(budget()):
            start.key = concurrency_key(loaded, start.trigger_event, start.identity)
    except ConveyorError as exc:  # an expression error, a timeout, a bad key
        item = start.item
        results[item.index] = rejected(item.index, item.idempotency_key, exc.code, exc.detail)
        return False
    return True


def _write(
    conn: Connection,
    tenant_id: str,
    automation: RowMapping,
    loaded: LoadedDefinition,
    starts: Sequence[_Start],
    now: datetime,
    source_type: str,
    source_id: str | None,
) -> dict[int, TriggerResult]:
    """Create the runs in one go: no user code (may run twice)."""
    new = [
        NewRun(
            automation,
            loaded,
            Launch(
                trigger_type="manual",
                source_type=source_type,
                source_id=source_id,
                trigger_event=s.trigger_event,
                identity=s.identity,
                idempotency_key=s.item.idempotency_key,
                contact_id=s.resolved.contact_id if s.resolved else None,
                concurrency_key=s.key,
            ),
        )
        for s in starts
    ]
    runs = create_runs(conn, tenant_id=tenant_id, items=new, now=now)
    lost = [s.item.idempotency_key for s, run in zip(starts, runs, strict=True) if run is None]
    # Keys a concurrent request took first (committed since the read): their runs.
    winners = run_store.find_by_idempotency_keys(
        conn, tenant_id, automation["id"], [k for k in lost if k is not None]
    )
    results: dict[int, TriggerResult] = {}
    for s, run in zip(starts, runs, strict=True):
        item = s.item
        if run is None:
            assert item.idempotency_key is not None
            results[item.index] = _duplicate(item, str(winners[item.idempotency_key]["id"]))
        else:
            results[item.index] = TriggerResult(
                item.index,
                ACCEPTED,
                item.idempotency_key,
                run_id=str(run["id"]),
                contact_id=s.resolved.contact_id if s.resolved else None,
            )
    return results


def _duplicate(item: BatchItem, run_id: str) -> TriggerResult:
    return TriggerResult(item.index, DUPLICATE, item.idempotency_key, run_id=run_id)


def _repeat(item: BatchItem, earlier: TriggerResult) -> TriggerResult:
    """A later item with the key of an earlier one: its duplicate, or rejected with it."""
    if earlier.status != REJECTED:
        assert earlier.run_id is not None
        return _duplicate(item, earlier.run_id)
    reason = f"same idempotency_key as item {earlier.index}, which was rejected: {earlier.reason}"
    return rejected(item.index, item.idempotency_key, earlier.code or "rejected", reason)
