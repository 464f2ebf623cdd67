"""Bulk operations: rows that track a cancel or replay over many runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from conveyor.store.tables import bulk_operations


def insert_operation(conn: Connection, row: Mapping[str, Any]) -> None:
    """Record a new bulk operation."""
    conn.execute(insert(bulk_operations).values(**row))


def get_operation(
    conn: Connection, operation_id: str, tenant_id: str | None = None, *, lock: bool = False
) -> RowMapping | None:
    """One bulk operation (of ``tenant_id`` when given)."""
    stmt = select(bulk_operations).where(bulk_operations.c.id == operation_id)
    if tenant_id is not None:
        stmt = stmt.where(bulk_operations.c.tenant_id == tenant_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def update_operation(conn: Connection, operation_id: str, values: Mapping[str, Any]) -> None:
    """Record progress."""
    conn.execute(
        update(bulk_operations).where(bulk_operations.c.id == operation_id).values(**values)
    )
