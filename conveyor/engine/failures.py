"""The automation-failure trigger: runs of the automations watching a failed run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, NewRun, create_runs
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store.definitions import LoadedDefinition


def fire_failure_triggers(
    conn: Connection, failed_runs: Sequence[Mapping[str, Any]], now: datetime
) -> None:
    """Start the ``automation_failure`` runs watching the automations of these failed runs.

    A run started by a failure trigger does not fire failure triggers itself,
    so two automations watching each other cannot loop. The new runs are
    created together, one ``create_runs`` per tenant, in the order of the
    failed runs (and of the watchers for each), whatever their number.
    """
    watchers: dict[str, list[tuple[RowMapping, LoadedDefinition]]] = {}
    items: dict[str, list[NewRun]] = {}
    for run in failed_runs:
        if run["trigger_type"] == "automation_failure":
            continue
        tenant = run["tenant_id"]
        if tenant not in watchers:
            watchers[tenant] = _watchers(conn, tenant)
        for automation, loaded in watchers[tenant]:
            if run["automation_name"] not in loaded.definition.trigger.automations:
                continue
            launch = Launch(
                trigger_type="automation_failure",
                source_type="automation",
                source_id=run["id"],
                identity=run["identity"],
                trigger_event=failure_event(run, now),
            )
            items.setdefault(tenant, []).append(NewRun(automation, loaded, launch))
    for tenant, new_runs in items.items():
        create_runs(conn, tenant_id=tenant, items=new_runs, now=now)


def _watchers(conn: Connection, tenant_id: str) -> list[tuple[RowMapping, LoadedDefinition]]:
    """The tenant's enabled ``automation_failure`` automations with their current definitions."""
    found = automation_store.list_enabled_by_trigger(conn, tenant_id, "automation_failure")
    loaded = definitions.load_many(conn, [str(a["current_version_id"]) for a in found])
    return [(a, loaded[str(a["current_version_id"])]) for a in found]


def failure_event(run: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The trigger event a failure-triggered run receives: the failed run's summary."""
    return {
        "id": None,
        "name": "automation.failed",
        "occurred_at": iso(now),
        "payload": {
            "run_id": run["id"],
            "automation_id": run["automation_id"],
            "automation_name": run["automation_name"],
            "status": run["status"],
            "error": run["error"],
            "trigger_event": run["trigger_event"],
            "created_at": iso(run["created_at"]),
            "completed_at": iso(run["completed_at"]),
        },
    }
