"""Session (dashboard login) wire schemas."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.scopes import Scope


class SessionCreate(BaseModel):
    """An API key to sign in with, as JSON or as an URL-encoded form."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=512, description="the API key (`cvk_...`)")


class Session(BaseModel):
    """The key a session is signed in with (the key itself is only in the cookie)."""

    tenant_id: str = Field(description="the tenant the key belongs to")
    key_id: str = Field(description="the key's id")
    label: str = Field(description="the key's label (may be empty)")
    scopes: list[Scope] = Field(description="what the key may do")
    csrf_token: str = Field(
        description="the `conveyor_csrf` cookie's value: send it as `X-CSRF-Token` with writes"
    )
