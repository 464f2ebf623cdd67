"""Lists of names: exact ones, and ``*.domain`` for every name under a domain. Pure.

Both the egress rules (``CONVEYOR_EGRESS_ALLOW``/``_DENY`` host names) and the
sender domains a tenant may use on the operator's relay are such lists; each
checks its own entries (what a host name or a domain is), this module holds
and matches them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def pattern_name(entry: str) -> str:
    """The name an entry (``name`` or ``*.name``) is about, without a final dot."""
    return (entry[2:] if entry.startswith("*.") else entry).rstrip(".")


@dataclass(frozen=True)
class NamePatterns:
    """Exact names and ``*.domain`` patterns, lower case."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".domain" for "*.domain"

    @classmethod
    def of(cls, entries: Iterable[str]) -> NamePatterns:
        """From entries already stripped, lower-cased and checked by their owner."""
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            if entry.startswith("*."):
                suffixes.append("." + pattern_name(entry))
            else:
                names.add(pattern_name(entry))
        return cls(frozenset(names), tuple(dict.fromkeys(suffixes)))

    def matches(self, name: str | None) -> bool:
        """Whether ``name`` is one of the names or under one of the domains."""
        if not name:
            return False
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def entries(self) -> list[str]:
        """The entries as written, sorted (exact names, then ``*.`` ones)."""
        return sorted(self.names) + sorted("*" + s for s in self.suffixes)
