"""Tenant use cases. Tenants are created by operators (CLI), not over the API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.definition import NAME_PATTERN
from conveyor.domain.errors import ConveyorError, TenantNotFound
from conveyor.domain.senders import SenderDomains
from conveyor.services.audit import Action, Actor, record
from conveyor.store import tenants as store

_NAME = re.compile(NAME_PATTERN)


class InvalidTenantName(ConveyorError):
    """A tenant name is a lowercase slug: letters, digits, ``-`` and ``_``, at most 100."""

    code = "invalid_tenant_name"


def tenant_to_dict(row: RowMapping) -> dict[str, Any]:
    """The public view of a tenant row."""
    return {"id": row["id"], "name": row["name"], "created_at": row["created_at"]}


def set_from_domains(
    conn: Connection, name: str, domains: SenderDomains | None, *, now: datetime
) -> dict[str, Any]:
    """Set the domains a tenant may send from through the operator's SMTP relay.

    None puts the tenant back on ``CONVEYOR_EMAIL_FROM_DOMAINS``; an empty
    list allows none (the tenant sends as ``CONVEYOR_EMAIL_FROM`` there). The
    change is written to the tenant's audit log, as the operator's.

    Raises:
        TenantNotFound: no tenant has this name.
    """
    tenant = get_tenant_by_name(conn, name)
    entries = domains.entries() if domains is not None else None
    store.set_from_domains(conn, tenant["id"], entries)
    record(
        conn,
        Actor.operator(tenant["id"]),
        Action.CHANNEL_SETTINGS_CHANGED,
        target_type="tenant",
        target_id=tenant["id"],
        details={"email_from_domains": entries},
        now=now,
    )
    return {**tenant, "email_from_domains": entries}


def create_tenant(conn: Connection, name: str, *, now: datetime) -> dict[str, Any]:
    """Create a tenant.

    Raises:
        InvalidTenantName: the name is not a slug.
        TenantNameTaken: a tenant with this name exists.
    """
    if not _NAME.match(name):
        raise InvalidTenantName(f"invalid tenant name {name!r}: {InvalidTenantName.__doc__}")
    return tenant_to_dict(store.create_tenant(conn, name=name, now=now))


def get_tenant_by_name(conn: Connection, name: str) -> dict[str, Any]:
    """The tenant with this name; raise ``TenantNotFound`` if there is none."""
    row = store.get_tenant_by_name(conn, name)
    if row is None:
        raise TenantNotFound(f"tenant {name!r} not found")
    return tenant_to_dict(row)


def ensure_tenant(conn: Connection, name: str, *, now: datetime) -> tuple[dict[str, Any], bool]:
    """The tenant with this name, created if missing; the flag says it was created."""
    row = store.get_tenant_by_name(conn, name)
    if row is not None:
        return tenant_to_dict(row), False
    return create_tenant(conn, name, now=now), True


def list_tenants(conn: Connection) -> list[dict[str, Any]]:
    """Every tenant, by name (operators only; there are few)."""
    return [tenant_to_dict(r) for r in store.list_tenants(conn, limit=10_000)]
