"""Rows planted with SQL as an older Conveyor could have stored them: bad JSON.

Lone surrogates (in a key and in a value), NaN, Infinity and a sub-tree 300
levels deep go into one JSON column of each kind of row the API shows:
events, contacts, step outputs, run history, run errors, messages, template
versions and dry-run results. They are written as ``json.dumps`` text, as
those versions did (``raw``: the store now cleans every JSON value it writes;
SQLite: PostgreSQL's jsonb refuses surrogates and NaN).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, insert, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB

from conveyor.clock import SystemClock
from conveyor.domain.ids import new_id
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.services import tenants as tenant_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import (
    contacts,
    events,
    messages,
    template_versions,
    templates,
)
from conveyor.store.tables import run_events, runs, step_runs
from conveyor.testing.factories import make_automation, trigger

DEPTH = 300
REPLACEMENT = "\ufffd"
TOO_DEEP = "<removed: too deep>"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def nest(levels: int, leaf: Any = None) -> Any:
    """``levels`` arrays, one inside the other."""
    value: Any = [] if leaf is None else leaf
    for _ in range(levels - (leaf is None)):
        value = [value]
    return value


def bad_value() -> dict[str, Any]:
    """A value with every flaw: lone surrogates (value and key), NaN, Infinity, depth 300."""
    return {
        "text": "ok \ud800 here",
        "key \udc00": 1,
        "nan": float("nan"),
        "inf": float("-inf"),
        "deep": nest(DEPTH),
        "fine": {"a": [1, 2.5, "é"]},
    }


def raw(conn: Connection, value: Any) -> Any:
    """``value`` as ``json.dumps`` writes it, past the cleaning of ``conveyor.store.types``."""
    text = type_coerce(json.dumps(value), Text)
    return cast(text, JSONB) if conn.dialect.name == "postgresql" else text


@dataclass
class Planted:
    """What was planted, by id."""

    tenant_id: str
    token: str
    run_id: str
    event_id: str
    contact_id: str
    message_id: str
    template: str
    result_id: str

    @property
    def auth(self) -> dict[str, str]:
        """Headers authenticating as the planted tenant."""
        return {"Authorization": f"Bearer {self.token}"}


def plant(db: Database) -> Planted:
    """A tenant whose rows of every kind hold bad JSON."""
    clock = SystemClock()
    with db.transaction() as conn:
        tenant = tenant_service.create_tenant(conn, "acme", now=clock.now())
        _, token = key_service.create_key(
            conn, tenant_id=tenant["id"], scopes=ALL_SCOPES, label="test", now=clock.now()
        )
    tenant_id = tenant["id"]
    template_id, version_id = new_id(), new_id()
    contact_id, result_id, dry_run_id = new_id(), new_id(), new_id()
    bad = bad_value()
    with db.transaction() as conn:
        conn.execute(
            insert(templates).values(
                id=template_id,
                tenant_id=tenant_id,
                name="ping",
                channel="push",
                current_version_id=version_id,
                current_version=1,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(template_versions).values(
                id=version_id,
                tenant_id=tenant_id,
                template_id=template_id,
                version=1,
                content={"title": "T", "body": "b", "data": {}},
                created_at=NOW,
            )
        )
    automation_id = make_automation(
        db,
        tenant_id,
        {
            "name": "bad-json",
            "steps": [
                {"key": "compute", "type": "set", "vars": {"x": 1}},
                {"key": "push", "type": "send_push_template", "template": "ping", "to": ["t1"]},
            ],
        },
    )
    run_id = trigger(db, tenant_id, "bad-json")
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    asyncio.run(Worker(db, settings).run_until_idle())
    with db.transaction() as conn:
        message_id = conn.execute(
            select(messages.c.id).where(messages.c.run_id == run_id)
        ).scalar_one()
        conn.execute(
            insert(contacts).values(
                id=contact_id,
                tenant_id=tenant_id,
                email="ada@x.org",
                push_targets=[],
                attributes=raw(conn, bad),
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(events).values(
                tenant_id=tenant_id,
                id="evt-1",
                name="order.completed",
                contact_id=contact_id,
                identity={"type": "email", "value": "ada@x.org"},
                payload=raw(conn, bad),
                occurred_at=NOW,
                received_at=NOW,
            )
        )
        conn.execute(
            update(step_runs)
            .where(step_runs.c.run_id == run_id, step_runs.c.step_key == "compute")
            .values(output=raw(conn, bad))
        )
        conn.execute(
            update(run_events)
            .where(run_events.c.run_id == run_id, run_events.c.seq == 1)
            .values(data=raw(conn, bad))
        )
        conn.execute(update(runs).where(runs.c.id == run_id).values(error=raw(conn, bad)))
        conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(content=raw(conn, bad), error=raw(conn, bad))
        )
        conn.execute(
            update(template_versions)
            .where(template_versions.c.id == version_id)
            .values(content=raw(conn, {"title": "T", "body": "b", "data": bad}))
        )
        conn.execute(
            insert(dry_runs).values(
                id=dry_run_id,
                tenant_id=tenant_id,
                automation_id=automation_id,
                version_id=new_id(),
                status="completed",
                start_date="2026-06-01",
                end_date="2026-06-01",
                timezone="UTC",
                arguments={},
                days_total=1,
                days_done=1,
                contacts_total=1,
                contacts_done=1,
                counts={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(dry_run_results).values(
                id=result_id,
                tenant_id=tenant_id,
                dry_run_id=dry_run_id,
                automation_id=automation_id,
                run_at="2026-06-01",
                profile_id=contact_id,
                result_type="run",
                result_id=None,
                status="success",
                result=raw(conn, bad),
                arguments=raw(conn, bad),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return Planted(
        tenant_id=tenant_id,
        token=token,
        run_id=run_id,
        event_id="evt-1",
        contact_id=contact_id,
        message_id=str(message_id),
        template="ping",
        result_id=result_id,
    )


def depth(value: Any) -> int:
    """How many arrays and objects nest in ``value`` (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0
