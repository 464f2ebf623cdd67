"""API key wire schemas."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from conveyor.domain.scopes import Scope


class ApiKey(BaseModel):
    """An API key (its token is only ever shown once, at creation)."""

    id: str
    label: str
    prefix: str = Field(description="the first characters of the token, to recognise it")
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="when the key stops working (null: never)")
    last_used_at: datetime | None = Field(
        description="when the key was last used, to the minute (null: never)"
    )


class ApiKeyCreate(BaseModel):
    """A key to create. A key can only grant scopes it holds itself."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field("", max_length=200, description="a name for people")
    scopes: list[Scope] = Field(min_length=1)
    expires_at: AwareDatetime | None = Field(
        None, description="when the key stops working (with a time zone, in the future)"
    )


class ApiKeyCreated(ApiKey):
    """A new key, with its token: store it now, it is not shown again."""

    token: str = Field(description="the secret; send it as `Authorization: Bearer <token>`")
