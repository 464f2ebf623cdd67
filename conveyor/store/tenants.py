"""Tenant repository: the root of isolation, one row per tenant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import Connection, RowMapping, func, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.domain.errors import TenantNameTaken
from conveyor.domain.ids import looks_like_id, new_id
from conveyor.store.tables import tenants


def create_tenant(conn: Connection, *, name: str, now: datetime) -> RowMapping:
    """Insert a tenant; raise ``TenantNameTaken`` if the name is in use."""
    tenant_id = new_id()
    try:
        # A savepoint keeps the caller's transaction usable after a violation
        # (PostgreSQL aborts the whole transaction otherwise).
        with conn.begin_nested():
            conn.execute(tenants.insert().values(id=tenant_id, name=name, created_at=now))
    except IntegrityError:
        if get_tenant_by_name(conn, name) is not None:
            raise TenantNameTaken(f"tenant {name!r} already exists") from None
        raise
    created = get_tenant(conn, tenant_id)
    assert created is not None
    return created


def get_tenant(conn: Connection, tenant_id: str) -> RowMapping | None:
    """The tenant with this id, or None."""
    if not looks_like_id(tenant_id):
        return None
    query = select(tenants).where(tenants.c.id == str(UUID(tenant_id)))
    return conn.execute(query).mappings().first()


def get_tenant_by_name(conn: Connection, name: str) -> RowMapping | None:
    """The tenant with this name, or None."""
    return conn.execute(select(tenants).where(tenants.c.name == name)).mappings().first()


def list_tenants(conn: Connection, *, limit: int = 100, offset: int = 0) -> list[RowMapping]:
    """Tenants by name."""
    query = select(tenants).order_by(tenants.c.name).limit(limit).offset(offset)
    return list(conn.execute(query).mappings())


def count_tenants(conn: Connection) -> int:
    """How many tenants exist.

    Readiness probes use it too: unlike ``SELECT 1`` it also fails when the
    schema has not been migrated.
    """
    return int(conn.execute(select(func.count()).select_from(tenants)).scalar_one())


def get_from_domains(conn: Connection, tenant_id: str) -> list[str] | None:
    """The tenant's own from-domains, or None when the server's setting applies."""
    query = select(tenants.c.email_from_domains).where(tenants.c.id == tenant_id)
    value = conn.execute(query).scalar()
    return list(value) if value is not None else None


def set_from_domains(conn: Connection, tenant_id: str, domains: list[str] | None) -> None:
    """Set the tenant's own from-domains (None: back to the server's setting)."""
    conn.execute(
        update(tenants).where(tenants.c.id == tenant_id).values(email_from_domains=domains)
    )
