"""Single triggers that arrived together, started in one transaction.

``POST /automations/{id}/trigger`` answers one run per request, but a busy
server has many such requests in flight at once. ``start_runs`` takes those
that are waiting (``conveyor.api.trigger_groups`` collects them) and starts
them with one write transaction and a fixed number of statements per
automation and tenant (``conveyor.engine.launch.create_runs``), instead of a
transaction of five statements each. Every trigger gets exactly the answer it
would have had alone, in the order ``trigger_run`` checks one:

1. the automation does not exist: ``AutomationNotFound``;
2. its idempotency key names a run of the automation: that run, not created
   (also when an earlier trigger of the group, or a concurrent request, took
   the key first);
3. the automation is disabled: ``AutomationDisabled``;
4. its identity is invalid or names an unknown contact: that error;
5. otherwise its run is created.

A trigger's error is its own: the others of the group are not affected.
An automation with a ``concurrency`` key needs user code evaluated outside
any transaction; its triggers are answered ``ALONE``, for the caller to start
them one by one with ``conveyor.services.runs.start_run``. A failure of the
transaction itself (the database is down) fails the whole group, as it would
have failed each request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection

from conveyor.domain.errors import AutomationDisabled, AutomationNotFound, ConveyorError
from conveyor.engine.launch import Launch, NewRun, create_runs, manual_event
from conveyor.services.identity import Resolved, resolve_identities
from conveyor.services.runs import run_summary
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store import runs as run_store
from conveyor.store.db import Database


@dataclass(frozen=True)
class Trigger:
    """One ``POST /automations/{id}/trigger`` (not a dry run), as its route checked it."""

    tenant_id: str
    automation_ref: str
    payload: Mapping[str, Any] | None
    identity: Mapping[str, Any] | None
    idempotency_key: str | None
    source_type: str
    source_id: str | None


class _Alone:
    def __repr__(self) -> str:
        return "ALONE"


# The answer for a trigger to be started on its own (its automation has a concurrency key).
ALONE: Final = _Alone()

# A run summary and whether it was created (False: an earlier run with its key).
Started = tuple[dict[str, Any], bool]
Outcome = Started | ConveyorError | _Alone


def start_runs(db: Database, triggers: Sequence[Trigger], now: datetime) -> list[Outcome]:
    """Start the triggers' runs in one write transaction; one outcome each, in order.

    Run again whole if PostgreSQL aborts the transaction (nothing of it stays).
    """
    return db.retrying(lambda conn: _start(conn, triggers, now))


def _start(conn: Connection, triggers: Sequence[Trigger], now: datetime) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(triggers)
    groups: dict[tuple[str, str], list[int]] = {}
    for index, trigger in enumerate(triggers):
        groups.setdefault((trigger.tenant_id, trigger.automation_ref), []).append(index)
    by_tenant: dict[str, list[tuple[int, NewRun]]] = {}
    for (tenant_id, ref), indexes in groups.items():
        try:
            news = _prepare(conn, tenant_id, ref, triggers, indexes, outcomes, now)
        except ConveyorError as exc:  # the automation's own trouble: its triggers', no one else's
            for index in indexes:
                outcomes[index] = outcomes[index] or exc
            continue
        for index, new in news:
            by_tenant.setdefault(tenant_id, []).append((index, new))
    for tenant_id, news in by_tenant.items():
        runs = create_runs(conn, tenant_id=tenant_id, items=[n for _, n in news], now=now)
        lost: dict[str, list[int]] = {}
        for (index, new), run in zip(news, runs, strict=True):
            if run is None:  # its key was taken: by an earlier trigger, or a concurrent request
                lost.setdefault(str(new.automation["id"]), []).append(index)
            else:
                outcomes[index] = (run_summary(run), True)
        for automation_id, indexes in lost.items():
            keys = [triggers[i].idempotency_key for i in indexes]
            winners = run_store.find_by_idempotency_keys(
                conn, tenant_id, automation_id, [k for k in keys if k is not None]
            )
            for index, key in zip(indexes, keys, strict=True):
                outcomes[index] = (run_summary(winners[str(key)]), False)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _prepare(
    conn: Connection,
    tenant_id: str,
    ref: str,
    triggers: Sequence[Trigger],
    indexes: Sequence[int],
    outcomes: list[Outcome | None],
    now: datetime,
) -> list[tuple[int, NewRun]]:
    """The runs to create for the triggers of one automation; the others' outcomes are set."""
    automation = automation_store.get_automation(conn, tenant_id, ref)
    if automation is None:
        for index in indexes:
            outcomes[index] = AutomationNotFound(f"automation {ref} not found")
        return []
    keys = [k for i in indexes if (k := triggers[i].idempotency_key) is not None]
    existing = run_store.find_by_idempotency_keys(conn, tenant_id, automation["id"], keys)
    fresh: list[int] = []
    for index in indexes:
        key = triggers[index].idempotency_key
        run = existing.get(key) if key is not None else None
        if run is not None:
            outcomes[index] = (run_summary(run), False)
        elif not automation["enabled"]:
            outcomes[index] = AutomationDisabled(f"automation {automation['name']} is disabled")
        else:
            fresh.append(index)
    if not fresh:
        return []
    loaded = definitions.load(conn, automation["current_version_id"])
    if loaded.definition.concurrency is not None:
        for index in fresh:
            outcomes[index] = ALONE
        return []
    resolved = _identities(conn, tenant_id, triggers, fresh, now)
    news: list[tuple[int, NewRun]] = []
    for index in fresh:
        trigger = triggers[index]
        resolution = resolved.get(index)
        if isinstance(resolution, ConveyorError):
            outcomes[index] = resolution
            continue
        launch = Launch(
            trigger_type="manual",
            source_type=trigger.source_type,
            source_id=trigger.source_id,
            trigger_event=manual_event(trigger.payload, now),
            identity=resolution.identity.as_dict() if resolution else None,
            idempotency_key=trigger.idempotency_key,
            contact_id=resolution.contact_id if resolution else None,
        )
        news.append((index, NewRun(automation, loaded, launch)))
    return news


def _identities(
    conn: Connection,
    tenant_id: str,
    triggers: Sequence[Trigger],
    indexes: Sequence[int],
    now: datetime,
) -> dict[int, Resolved | ConveyorError]:
    """Each trigger's resolved identity, contacts seen for the first time created."""
    with_identity = [i for i in indexes if triggers[i].identity is not None]
    if not with_identity:
        return {}
    resolutions = resolve_identities(
        conn, tenant_id, [triggers[i].identity or {} for i in with_identity], now, create=True
    )
    out: dict[int, Resolved | ConveyorError] = {}
    for index, resolution in zip(with_identity, resolutions, strict=True):
        assert resolution is not None  # created: only ``create=False`` answers None
        out[index] = resolution
    return out
