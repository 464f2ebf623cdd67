"""API key scopes: ``<resource>:<action>``, one per capability an API key may hold."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from conveyor.domain.errors import ConveyorError


class Scope(StrEnum):
    """Every scope a key can be granted."""

    AUTOMATIONS_READ = "automations:read"
    AUTOMATIONS_WRITE = "automations:write"
    AUTOMATIONS_TRIGGER = "automations:trigger"
    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"
    KEYS_ADMIN = "keys:admin"
    TEMPLATES_READ = "templates:read"
    TEMPLATES_WRITE = "templates:write"
    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    EVENTS_READ = "events:read"
    EVENTS_WRITE = "events:write"
    DRY_RUNS_READ = "dry-runs:read"
    DRY_RUNS_DELETE = "dry-runs:delete"
    SETTINGS_READ = "settings:read"
    SETTINGS_WRITE = "settings:write"


ALL_SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)

# Other names a key may be granted a scope by: seed 000's (Omneo's, see
# docs/seeds/000.md). A synonym is stored, shown and checked as the scope it names.
SYNONYMS: dict[str, str] = {
    "read-reactions": Scope.DRY_RUNS_READ.value,
    "delete-reactions": Scope.DRY_RUNS_DELETE.value,
}


class UnknownScope(ConveyorError):
    """One or more scope names are not known."""

    code = "unknown_scope"


def parse_scopes(names: Iterable[str]) -> frozenset[str]:
    """Check scope names; raise ``UnknownScope`` naming the unknown ones.

    A synonym (``SYNONYMS``) is taken as the scope it names.

    Args:
        names: scope names as given by a person or a client.

    Returns:
        The distinct scope names.
    """
    given = frozenset(SYNONYMS.get(name, name) for name in names)
    unknown = sorted(given - set(ALL_SCOPES))
    if unknown:
        raise UnknownScope(
            f"unknown scope(s): {', '.join(unknown)} (known: {', '.join(ALL_SCOPES)})"
        )
    return given


def sort_scopes(scopes: Iterable[str]) -> list[str]:
    """Scopes in their canonical (declaration) order, for stable output."""
    rank = {name: i for i, name in enumerate(ALL_SCOPES)}
    return sorted(set(scopes), key=lambda s: (rank.get(s, len(rank)), s))
