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
from pydantic_core import PydanticCustomError

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


# What `normalize_email` accepts, as a pattern on the raw value: one `@` with
# something on both sides, no whitespace inside, whitespace around it allowed
# (it is trimmed). The whitespace is spelt out as Python's `str.isspace`
# counts it, since `\s` means other things in other regex dialects. Stated in
# the schema only: `_email` keeps the check and its message.
_WS = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_PATTERN = f"^[{_WS}]*[^@{_WS}]+@[^@{_WS}]+[{_WS}]*$"

Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=MAX_EMAIL),
    AfterValidator(_email),
    Field(
        description="an email address (one `@`, no spaces); unique per tenant; stored "
        "trimmed and lowercased, compared without case",
        json_schema_extra={"pattern": EMAIL_PATTERN},
        examples=["ada@example.com"],
    ),
]
ExternalId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EXTERNAL_ID),
    Field(description="your system's id for the person; unique per tenant, compared exactly"),
]
PushTarget = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PUSH_TARGET),
    Field(description="a device token, or an Apprise URL (`ntfy://...`, `json://...`)"),
]
PushTargets = Annotated[
    list[PushTarget],
    Field(
        max_length=MAX_PUSH_TARGETS,
        description="device tokens (webhook provider) or Apprise URLs, at most 100; repeats "
        "are dropped. URLs are stored sealed (422 `secret_key_missing` when the server has no "
        "secret key) and shown masked; writing back a masked target keeps the stored one. A "
        "URL to a literal private address, a `localhost` name or a denied host is a 422 "
        "`egress_denied`",
    ),
]
Attributes = Annotated[
    dict[str, Any],
    Field(
        description="free JSON attributes, nested at most 63 levels (`contact.attributes` in "
        "expressions)"
    ),
]


class Contact(BaseModel):
    """The person runs are about."""

    id: str = Field(description="the contact's id (a UUID)")
    external_id: str | None = Field(description="your system's id for the person, if set")
    email: str | None = Field(description="the email address, trimmed and lowercased, if set")
    push_targets: list[str] = Field(
        description="device tokens, and Apprise URLs masked (`json://bot:****@host/hook`)"
    )
    attributes: dict[str, Any] = Field(description="free JSON attributes")
    created_at: datetime = Field(description="when the contact was created (RFC 3339, UTC)")
    updated_at: datetime = Field(description="when it last changed (RFC 3339, UTC)")


class ContactErasure(BaseModel):
    """What erasing a contact did (`DELETE /contacts/{id}?erase=true`); only ids and counts."""

    contact_id: str = Field(description="the erased contact's id (ids stay, see docs/api.md)")
    erased: bool = Field(description="always true: the contact is deleted and its values erased")
    runs_cancelled: int = Field(
        description="unfinished runs of the contact cancelled first (reason `erasure`)"
    )
    runs: int = Field(
        description="runs of the contact (real and simulated) erased, each now ending its "
        "history with a `run.erased` line"
    )
    redacted: dict[str, int] = Field(
        description="per table, rows in which a value of the contact was replaced by `[erased]`"
    )
    removed: dict[str, int] = Field(
        description="per table, rows deleted: the contact itself (`contacts`), run tags and "
        "idle concurrency slots named by one of its values"
    )


class ContactPage(BaseModel):
    """One page of contacts."""

    items: list[Contact] = Field(description="this page's contacts, newest first")
    total: int = Field(description="how many contacts match, over all pages (see `total_exact`)")
    total_exact: bool = Field(
        description="false when more than 10,000 match: `total` is then a lower bound"
    )
    limit: int = Field(description="the page size asked for (`limit`, default 100)")
    offset: int = Field(description="how many matching contacts were skipped (0 with a `cursor`)")
    next_cursor: str | None = Field(
        description="pass as `cursor` to get the next page; null on the last page"
    )


class ContactUpsert(BaseModel):
    """Create or update the contact with this email and/or external id.

    `attributes` are merged into the existing ones (a key set to null is
    removed); `push_targets` replace the existing list.
    """

    model_config = ConfigDict(extra="forbid")

    email: Email | None = Field(
        None,
        description="finds the contact (when `external_id` does not), or becomes its email; "
        "`email`, `external_id` or both are required; null: not given",
    )
    external_id: ExternalId | None = Field(
        None, description="finds the contact first (it wins over `email`); null: not given"
    )
    push_targets: PushTargets | None = Field(
        None, description="replace the contact's push targets; null or left out: kept"
    )
    attributes: Attributes | None = Field(
        None,
        description="merged into the contact's attributes (RFC 7396: a key set to null is "
        "removed); null or left out: kept",
    )

    @model_validator(mode="after")
    def _needs_a_key(self) -> ContactUpsert:
        if self.email is None and self.external_id is None:
            raise PydanticCustomError(
                "contact_key_missing",
                "give `email`, `external_id` or both, to find or create the contact",
            )
        return self


class ContactReplace(BaseModel):
    """Every field of a contact; the ones left out are cleared."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = Field(None, description="the email; null or left out: none")
    external_id: ExternalId | None = Field(
        None, description="the external id; null or left out: none"
    )
    push_targets: PushTargets = Field(
        default_factory=list, description="the push targets; left out: none"
    )
    attributes: Attributes = Field(
        default_factory=dict, description="the attributes, replacing all; left out: none"
    )


class ContactPatch(BaseModel):
    """A JSON merge patch (RFC 7396) of a contact.

    Fields given change and fields left out stay; `null` clears a field.
    `attributes` merge key by key (a key set to null is removed).
    """

    model_config = ConfigDict(extra="forbid")

    email: Email | None = Field(None, description="a new email; null clears it")
    external_id: ExternalId | None = Field(None, description="a new external id; null clears it")
    push_targets: PushTargets | None = Field(
        None, description="the new list of push targets; null clears it"
    )
    attributes: Attributes | None = Field(
        None,
        description="merged into the attributes, recursively (a key set to null is removed); "
        "null clears them all",
    )
