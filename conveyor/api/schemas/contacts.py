"""Contact wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from conveyor.domain.contacts import (
    MAX_EMAIL,
    MAX_EXTERNAL_ID,
    MAX_PUSH_TARGET,
    MAX_PUSH_TARGETS,
    InvalidIdentity,
    normalize_email,
)


def _email(value: str) -> str:
    try:
        return normalize_email(value)
    except InvalidIdentity as exc:
        raise ValueError(exc.detail) from None


Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=MAX_EMAIL),
    AfterValidator(_email),
    Field(description="unique per tenant; stored trimmed and lowercased"),
]
ExternalId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EXTERNAL_ID),
    Field(description="your system's id for the person; unique per tenant, compared exactly"),
]
PushTarget = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PUSH_TARGET)]
PushTargets = Annotated[
    list[PushTarget],
    Field(
        max_length=MAX_PUSH_TARGETS,
        description="device tokens (webhook provider) or Apprise URLs; repeats are dropped",
    ),
]
Attributes = Annotated[dict[str, Any], Field(description="free JSON attributes")]


class Contact(BaseModel):
    """The person runs are about."""

    id: str
    external_id: str | None
    email: str | None
    push_targets: list[str]
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ContactPage(BaseModel):
    """One page of contacts."""

    items: list[Contact]
    total: int = Field(description="how many contacts match, over all pages (see `total_exact`)")
    total_exact: bool = Field(
        description="false when more than 10,000 match: `total` is then a lower bound"
    )
    limit: int
    offset: int
    next_cursor: str | None


class ContactUpsert(BaseModel):
    """Create or update the contact with this email and/or external id.

    `attributes` are merged into the existing ones (a key set to null is
    removed); `push_targets` replace the existing list.
    """

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    external_id: ExternalId | None = None
    push_targets: PushTargets | None = None
    attributes: Attributes | None = None

    @model_validator(mode="after")
    def _needs_a_key(self) -> ContactUpsert:
        if self.email is None and self.external_id is None:
            raise ValueError("give `email`, `external_id` or both, to find or create the contact")
        return self


class ContactReplace(BaseModel):
    """Every field of a contact; the ones left out are cleared."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    external_id: ExternalId | None = None
    push_targets: PushTargets = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)


class ContactPatch(BaseModel):
    """A JSON merge patch (RFC 7396) of a contact.

    Fields given change and fields left out stay; `null` clears a field.
    `attributes` merge key by key (a key set to null is removed).
    """

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    external_id: ExternalId | None = None
    push_targets: PushTargets | None = None
    attributes: Attributes | None = None
