"""Identifiers: UUIDv7 strings, so ids sort by creation time."""

from __future__ import annotations

import re

import uuid_utils

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def new_id() -> str:
    """A new UUIDv7 as a string."""
    return str(uuid_utils.uuid7())


def looks_like_id(value: str) -> bool:
    """True if ``value`` has the shape of a UUID (so it is not a name)."""
    return bool(_UUID.match(value))
