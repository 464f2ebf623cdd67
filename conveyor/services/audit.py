"""The audit log: key creation and revocation, channel-setting changes.

A row is written in the same transaction as the change it records, so there
is never a change without its row nor a row for a change that rolled back.
Rows say which key acted (none when an operator used the CLI), what it did
to what, when, and from which client address; ``details`` names what
changed, never a secret's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping

from conveyor.services.pagination import Page, page_of
from conveyor.store import audit as store

if TYPE_CHECKING:  # keys records its changes here: no import back at run time
    from conveyor.services.keys import Principal


class Action(StrEnum):
    """What an audit row records."""

    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    CHANNEL_SETTINGS_CHANGED = "channel_settings.changed"


@dataclass(frozen=True)
class Actor:
    """Who made a change: an API key from a client address, or an operator (``key=None``)."""

    tenant_id: str
    key_id: str | None
    client_address: str | None

    @classmethod
    def of(cls, principal: Principal, client_address: str | None) -> Actor:
        """The actor behind an API request."""
        return cls(principal.tenant_id, principal.key_id, client_address)

    @classmethod
    def operator(cls, tenant_id: str) -> Actor:
        """An operator acting on a tenant from the command line."""
        return cls(tenant_id, None, "cli")


def record(
    conn: Connection,
    actor: Actor,
    action: Action,
    *,
    target_type: str,
    target_id: str | None,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Write an audit row in the caller's transaction."""
    store.insert(
        conn,
        tenant_id=actor.tenant_id,
        key_id=actor.key_id,
        action=action.value,
        target_type=target_type,
        target_id=target_id,
        client_address=(actor.client_address or "")[:64] or None,
        details=details,
        now=now,
    )


def entry_view(row: RowMapping) -> dict[str, Any]:
    """The public view of an audit row."""
    return {
        "id": row["id"],
        "tenant_id": row["tenant_id"],
        "key_id": row["key_id"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "client_address": row["client_address"],
        "details": row["details"],
        "created_at": row["created_at"],
    }


def list_entries(
    conn: Connection,
    tenant_id: str | None,
    *,
    limit: int = 100,
    offset: int = 0,
    before_id: str | None = None,
    action: Action | None = None,
) -> Page[dict[str, Any]]:
    """A page of the audit log, newest first (every tenant's when ``tenant_id`` is None)."""
    rows, total = store.list_entries(
        conn,
        tenant_id,
        limit=limit + 1,
        offset=offset,
        before_id=before_id,
        action=action.value if action else None,
    )
    page = page_of(rows, total, limit)
    return Page([entry_view(r) for r in page.items], page.total, page.has_more)
