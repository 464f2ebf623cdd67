"""API key wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from conveyor.domain.scopes import SYNONYMS, Scope
from conveyor.domain.times import Moment


class ApiKey(BaseModel):
    """An API key (its token is only ever shown once, at creation)."""

    id: str = Field(description="the key's id (a UUID)")
    label: str = Field(description="its name for people (may be empty)")
    prefix: str = Field(description="the first characters of the token, to recognise it")
    scopes: list[Scope] = Field(description="what the key may do, sorted")
    created_at: datetime = Field(description="when it was created (RFC 3339, UTC)")
    revoked_at: datetime | None = Field(description="when it was revoked (null: it was not)")
    expires_at: datetime | None = Field(description="when the key stops working (null: never)")
    last_used_at: datetime | None = Field(
        description="when the key was last used, to the minute (null: never)"
    )


def _canonical(name: Any) -> Any:
    return SYNONYMS.get(name, name) if isinstance(name, str) else name


# A scope to grant: a synonym (seed 000's `read-reactions`...) is taken as the scope it names.
GrantedScope = Annotated[Scope, BeforeValidator(_canonical)]


class ApiKeyCreate(BaseModel):
    """A key to create. A key can only grant scopes it holds itself."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field("", max_length=200, description="a name for people")
    scopes: list[GrantedScope] = Field(
        min_length=1,
        description="what the key may do; only scopes the calling key holds (403 otherwise); "
        "repeats count once; `read-reactions` and `delete-reactions` are taken as "
        "`dry-runs:read` and `dry-runs:delete`",
    )
    expires_at: Moment | None = Field(
        None,
        description="when the key stops working (with a time zone, in the future: 422 "
        "otherwise); null or left out: never",
    )


class ApiKeyCreated(ApiKey):
    """A new key, with its token: store it now, it is not shown again."""

    token: str = Field(description="the secret; send it as `Authorization: Bearer <token>`")
