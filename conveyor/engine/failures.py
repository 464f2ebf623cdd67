"""The automation-failure trigger: runs of the automations watching a failed run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, create_run
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store.definitions import LoadedDefinition


def fire_failure_triggers(
    conn: Connection, failed_runs: Sequence[Mapping[str, Any]], now: datetime
) -> None:
    """Start the ``automation_failure`` runs watching the automations of these failed runs.

    A run started by a failure trigger does not fire failure triggers itself,
    so two automations watching each other cannot loop.
    """
    watchers: dict[str, list[tuple[RowMapping, LoadedDefinition]]] = {}
    for run in failed_runs:
        if run["trigger_type"] == "automation_failure":
            continue
        tenant = run["tenant_id"]
        if tenant not in watchers:
            watchers[tenant] = [
                (a, definitions.load(conn, a["current_version_id"]))
                for a in automation_store.list_enabled_by_trigger(
                    conn, tenant, "automation_failure"
                )
            ]
        for automation, loaded in watchers[tenant]:
            if run["automation_name"] not in loaded.definition.trigger.automations:
                continue
            create_run(
                conn,
                tenant_id=tenant,
                automation=automation,
                loaded=loaded,
                now=now,
                launch=Launch(
                    trigger_type="automation_failure",
                    source_type="automation",
                    source_id=run["id"],
                    identity=run["identity"],
                    trigger_event=failure_event(run, now),
                ),
            )


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
