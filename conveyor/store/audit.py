"""Audit log rows: who changed access or sending settings, when, from where."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, RowMapping, func, select

from conveyor.domain.ids import new_id
from conveyor.store.tables import audit_log


def insert(
    conn: Connection,
    *,
    tenant_id: str,
    key_id: str | None,
    action: str,
    target_type: str,
    target_id: str | None,
    client_address: str | None,
    details: dict[str, Any],
    now: datetime,
) -> str:
    """Insert an audit row; its id."""
    row_id = new_id()
    conn.execute(
        audit_log.insert().values(
            id=row_id,
            tenant_id=tenant_id,
            key_id=key_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            client_address=client_address,
            details=details,
            created_at=now,
        )
    )
    return row_id


def list_entries(
    conn: Connection,
    tenant_id: str | None,
    *,
    limit: int,
    offset: int = 0,
    before_id: str | None = None,
    action: str | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of audit rows, newest first, and how many match.

    Args:
        conn: connection.
        tenant_id: the tenant, or None for every tenant (operators, from the CLI).
        limit: rows at most.
        offset: rows to skip.
        before_id: keyset cursor: only rows older than this one.
        action: only rows of this action.
    """
    where = []
    if tenant_id is not None:
        where.append(audit_log.c.tenant_id == tenant_id)
    if action is not None:
        where.append(audit_log.c.action == action)
    total = conn.execute(select(func.count()).select_from(audit_log).where(*where)).scalar_one()
    query = select(audit_log).where(*where)
    if before_id is not None:
        query = query.where(audit_log.c.id < str(UUID(before_id)))
    query = query.order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)
