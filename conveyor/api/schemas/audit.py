"""Audit log wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conveyor.services.audit import Action


class AuditEntry(BaseModel):
    """One change to access or sending settings: who, what, when, from where."""

    id: str = Field(description="the entry's id (a UUID)")
    key_id: str | None = Field(
        description="the API key that acted; null: an operator, from the CLI"
    )
    action: Action = Field(
        description="what was done: `key.created`, `key.revoked` or `channel_settings.changed`"
    )
    target_type: str = Field(
        description="what was changed: `api_key`, `channel_settings`, or `tenant` (an "
        "operator's change of the tenant's allowed sender domains)"
    )
    target_id: str | None = Field(
        description="the key's id (`api_key`), the tenant's id (`tenant`); "
        "null for `channel_settings`"
    )
    client_address: str | None = Field(
        description="the client address the request came from; `cli` for an operator"
    )
    details: dict[str, Any] = Field(
        description="what changed, never a secret's value: a key's `label` and `scopes` "
        "(and `expires_at` on creation); for channel settings, `changed` naming the fields "
        "per channel; for a tenant, its `email_from_domains`"
    )
    created_at: datetime = Field(description="when the change was made (RFC 3339, UTC)")
