"""Audit log wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from conveyor.services.audit import Action


class AuditEntry(BaseModel):
    """One change to access or sending settings: who, what, when, from where."""

    id: str
    key_id: str | None = Field(
        description="the API key that acted; null: an operator, from the CLI"
    )
    action: Action
    target_type: str = Field(description="what was changed: `api_key` or `channel_settings`")
    target_id: str | None = Field(description="the key's id, or the channel's name")
    client_address: str | None = Field(description="where the request came from (`cli`: the CLI)")
    details: dict[str, Any] = Field(description="what changed; never a secret's value")
    created_at: datetime
