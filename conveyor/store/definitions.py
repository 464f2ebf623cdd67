"""Parsed automation definitions by version id.

A version never changes once written, so its parsed definition and graph are
cached for the life of the process: the engine reads one on every round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from conveyor.domain.definition import AutomationDefinition, Graph, build_graph
from conveyor.domain.errors import NotFound
from conveyor.store.tables import automation_versions

_CACHE_SIZE = 2048


@dataclass(frozen=True)
class LoadedDefinition:
    """A version's definition, parsed, with its graph."""

    version_id: str
    version: int
    definition: AutomationDefinition
    graph: Graph


_cache: dict[str, LoadedDefinition] = {}


def parse_stored(version_id: str, version: int, raw: dict[str, Any]) -> LoadedDefinition:
    """Parse a stored (already validated) definition and remember it."""
    hit = _cache.get(version_id)
    if hit is not None:
        return hit
    defn = AutomationDefinition.model_validate(raw)
    loaded = LoadedDefinition(version_id, version, defn, build_graph(defn))
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[version_id] = loaded
    return loaded


def load(conn: Connection, version_id: str) -> LoadedDefinition:
    """The parsed definition of a version (from the cache when possible)."""
    hit = _cache.get(version_id)
    if hit is not None:
        return hit
    row = conn.execute(
        select(automation_versions.c.version, automation_versions.c.definition).where(
            automation_versions.c.id == version_id
        )
    ).first()
    if row is None:
        raise NotFound(f"automation version {version_id} not found")
    return parse_stored(version_id, row.version, row.definition)


def load_many(conn: Connection, version_ids: Iterable[str]) -> dict[str, LoadedDefinition]:
    """The parsed definitions of several versions; those not cached are read in one statement.

    A version that does not exist is left out of the answer (``load`` raises).
    """
    wanted = set(version_ids)
    out = {v: _cache[v] for v in wanted if v in _cache}
    missing = sorted(wanted - set(out))
    if missing:
        rows = conn.execute(
            select(
                automation_versions.c.id,
                automation_versions.c.version,
                automation_versions.c.definition,
            ).where(automation_versions.c.id.in_(missing))
        )
        for row in rows:
            out[str(row.id)] = parse_stored(str(row.id), row.version, row.definition)
    return out
