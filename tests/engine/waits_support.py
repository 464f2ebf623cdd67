"""Helpers for tests of waits, schedules and child runs: trigger with an identity, send events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain.ids import new_id
from conveyor.services.events import ItemResult, NewEvent, ingest_events
from conveyor.services.runs import trigger_run
from conveyor.store.db import Database
from conveyor.store.messaging_tables import waits
from conveyor.store.runs import get_events


def start_run(
    db: Database,
    tenant: str,
    automation: str,
    now: datetime,
    *,
    email: str | None = "olivia@example.com",
    payload: dict[str, Any] | None = None,
) -> str:
    """Trigger a run about ``email`` (the trigger resolves its contact)."""
    identity = {"type": "email", "value": email} if email else None
    with db.transaction() as conn:
        run, _ = trigger_run(
            conn,
            tenant_id=tenant,
            automation_ref=automation,
            payload=payload,
            identity=identity,
            idempotency_key=None,
            source_type="user",
            source_id="test",
            now=now,
        )
    return str(run["id"])


def send_event(
    db: Database,
    tenant: str,
    name: str,
    now: datetime,
    *,
    email: str = "olivia@example.com",
    payload: dict[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> ItemResult:
    """Ingest one event through the events service (which delivers it to waits)."""
    item = NewEvent(
        index=0,
        id=event_id or new_id(),
        name=name,
        identity={"type": "email", "value": email},
        payload=payload or {},
        occurred_at=occurred_at,
    )
    (result,) = ingest_events(db, tenant, [item], now)
    assert result.status == "accepted", result
    return result


def wait_row(db: Database, run_id: str) -> dict[str, Any]:
    """The run's one wait row."""
    with db.read() as conn:
        rows = conn.execute(select(waits).where(waits.c.run_id == run_id)).mappings().all()
    assert len(rows) == 1, rows
    return dict(rows[0])


def history(db: Database, run_id: str) -> list[dict[str, Any]]:
    """The run's history lines."""
    with db.read() as conn:
        return [dict(e) for e in get_events(conn, run_id)]
