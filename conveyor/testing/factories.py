"""Factories: tenants, automations, runs and dry runs in a real database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import parse_definition
from conveyor.services import dry_runs as dry_run_service
from conveyor.services.runs import trigger_run
from conveyor.store import automations as automation_store
from conveyor.store import tenants as tenant_store
from conveyor.store.db import Database


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def make_tenant(db: Database, name: str = "acme", now: datetime | None = None) -> str:
    """Create a tenant and return its id."""
    with db.transaction() as conn:
        row = tenant_store.create_tenant(conn, name=name, now=_now(now))
    return str(row["id"])


def make_automation(
    db: Database, tenant_id: str, definition: Mapping[str, Any], now: datetime | None = None
) -> str:
    """Validate and store an automation; return its id."""
    defn = parse_definition(definition, step_type_specs())
    stored = defn.model_dump(mode="json", exclude_none=True, by_alias=True)
    with db.transaction() as conn:
        row = automation_store.create_automation(
            conn,
            tenant_id=tenant_id,
            name=defn.name,
            enabled=defn.enabled,
            trigger_type=defn.trigger.type,
            definition=stored,
            now=_now(now),
        )
    return str(row["id"])


def trigger(
    db: Database,
    tenant_id: str,
    automation: str,
    payload: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Trigger a run manually and return its id."""
    with db.transaction() as conn:
        run, _ = trigger_run(
            conn,
            tenant_id=tenant_id,
            automation_ref=automation,
            payload=payload,
            identity=None,
            idempotency_key=idempotency_key,
            source_type="user",
            source_id="test",
            now=_now(now),
        )
    return str(run["id"])


def request_dry_run(
    db: Database,
    tenant_id: str,
    automation: str,
    start_date: date,
    end_date: date,
    profile_ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> str:
    """Ask for a dry run of ``automation`` (id or name) over the days given; return its id."""
    with db.transaction() as conn:
        view = dry_run_service.request_dry_run(
            conn,
            tenant_id,
            automation,
            start_date=start_date,
            end_date=end_date,
            timezone=None,
            profile_ids=profile_ids,
            version=None,
            payload={},
            requested_by="test",
            max_days=366,
            now=_now(now),
        )
    return str(view["id"])
