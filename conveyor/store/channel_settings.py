"""Channel settings repository: one row per tenant overriding the environment defaults.

The values arrive here as they are to be stored: the secrets among them
(an SMTP password, a webhook URL) already sealed by the caller
(``conveyor.services.channels``, the one writer).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, select, update

from conveyor.store.dialect import insert as upsert_insert
from conveyor.store.messaging_tables import channel_settings


def get_overrides(conn: Connection, tenant_id: str) -> RowMapping | None:
    """The tenant's overrides (``email``, ``push``, ``updated_at``), or None if it has none."""
    query = select(channel_settings).where(channel_settings.c.tenant_id == tenant_id)
    return conn.execute(query).mappings().first()


def lock_overrides(conn: Connection, tenant_id: str) -> RowMapping | None:
    """``get_overrides`` for a read-modify-write (locked on PostgreSQL until the commit)."""
    # FOR UPDATE is dropped on SQLite, where BEGIN IMMEDIATE already serialises writers.
    query = (
        select(channel_settings).where(channel_settings.c.tenant_id == tenant_id).with_for_update()
    )
    return conn.execute(query).mappings().first()


def put_overrides(
    conn: Connection,
    tenant_id: str,
    *,
    email: dict[str, Any],
    push: dict[str, Any],
    now: datetime,
) -> None:
    """Replace the tenant's overrides."""
    values = {"tenant_id": tenant_id, "email": email, "push": push, "updated_at": now}
    stmt = upsert_insert(conn, channel_settings).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"email": email, "push": push, "updated_at": now},
        )
    )


def page_all(conn: Connection, *, after_tenant: str | None, limit: int) -> list[RowMapping]:
    """A page of every tenant's overrides, by tenant id (``secrets rotate``)."""
    query = select(channel_settings)
    if after_tenant is not None:
        query = query.where(channel_settings.c.tenant_id > after_tenant)
    return list(conn.execute(query.order_by(channel_settings.c.tenant_id).limit(limit)).mappings())


def set_values(
    conn: Connection, tenant_id: str, *, email: dict[str, Any], push: dict[str, Any]
) -> None:
    """Store the overrides as they are (re-sealed: ``updated_at`` stays)."""
    conn.execute(
        update(channel_settings)
        .where(channel_settings.c.tenant_id == tenant_id)
        .values(email=email, push=push)
    )
