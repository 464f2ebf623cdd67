"""Contacts and identities: the rules, without storage.

A contact is found by its id, its ``email`` or its ``external_id``; both of the
latter are unique per tenant. Emails are compared without case (they are
stored lowercased), external ids exactly, as the client's system knows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from conveyor.domain.errors import Conflict, ConveyorError, NotFound
from conveyor.domain.ids import looks_like_id

IdentityType = Literal["email", "external_id", "contact_id"]
IDENTITY_TYPES: tuple[str, ...] = ("email", "external_id", "contact_id")

MAX_EMAIL = 320  # the column's width (RFC 5321's limit on a path)
MAX_EXTERNAL_ID = 255
MAX_PUSH_TARGETS = 100
MAX_PUSH_TARGET = 1000
# Deliberately loose: one `@` with something on both sides and no spaces. The
# mail server is the judge of the rest; a strict grammar here only refuses
# addresses people really have.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ContactNotFound(NotFound):
    """The contact was not found."""

    code = "contact_not_found"


class ContactConflict(Conflict):
    """Another contact already has this email or external id."""

    code = "contact_conflict"


class ContactEmailTaken(ContactConflict):
    """Another contact of the tenant already has this email."""

    code = "contact_email_taken"


class ContactExternalIdTaken(ContactConflict):
    """Another contact of the tenant already has this external id."""

    code = "contact_external_id_taken"


class InvalidIdentity(ConveyorError):
    """The identity cannot name a contact (a malformed email, a contact id that is no id)."""

    code = "invalid_identity"


class UnknownContact(ConveyorError):
    """The identity names a contact id that does not exist in the tenant."""

    code = "unknown_contact"


def normalize_email(value: str) -> str:
    """The stored form of an email: trimmed and lowercased; ``InvalidIdentity`` if it is none."""
    email = value.strip().lower()
    if not _EMAIL.match(email) or len(email) > MAX_EMAIL:
        raise InvalidIdentity(f"{value!r} is not an email address")
    return email


def normalize_external_id(value: str) -> str:
    """An external id as stored (exactly as given); ``InvalidIdentity`` if empty or too long."""
    if not value or len(value) > MAX_EXTERNAL_ID:
        raise InvalidIdentity(f"an external id has 1 to {MAX_EXTERNAL_ID} characters")
    return value


@dataclass(frozen=True)
class IdentityRef:
    """A checked identity: its type and its normalised value."""

    type: IdentityType
    value: str

    def as_dict(self) -> dict[str, str]:
        """The ``{type, value}`` form runs and events store."""
        return {"type": self.type, "value": self.value}


def parse_identity(identity: Mapping[str, Any]) -> IdentityRef:
    """Check ``{type, value}`` and normalise the value; ``InvalidIdentity`` if it cannot be one."""
    kind, value = identity.get("type"), identity.get("value")
    if kind not in IDENTITY_TYPES:
        raise InvalidIdentity(f"identity type must be one of {', '.join(IDENTITY_TYPES)}")
    if not isinstance(value, str) or not value:
        raise InvalidIdentity("identity value must be a non-empty string")
    if kind == "email":
        return IdentityRef("email", normalize_email(value))
    if kind == "external_id":
        return IdentityRef("external_id", normalize_external_id(value))
    if not looks_like_id(value):
        raise InvalidIdentity(f"contact id {value!r} is not an id")
    # The canonical form: SQLite compares ids as text.
    return IdentityRef("contact_id", str(UUID(value)))


def clean_push_targets(targets: Iterable[str]) -> list[str]:
    """Push targets in the order given, without repeats (one target gets one notification)."""
    return list(dict.fromkeys(targets))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge key by key, ``null`` removes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
