"""Event repository: ingested events, keyed by (tenant, the client's id).

Ingestion writes a whole batch in one ``INSERT ... ON CONFLICT DO NOTHING
RETURNING id`` (see ``conveyor.store.batch``): the ids it returns are the
events that are new; any other was stored before, perhaps by a concurrent
request carrying the same event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, literal, select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from conveyor.store.batch import MANY, insert_new, insert_new_copied, restrict_to
from conveyor.store.messaging_tables import events

Position = tuple[datetime, str]  # (occurred_at, id) of the last event of a page

_BY_ID = select(events).where(
    events.c.tenant_id == bindparam("tenant_id"), events.c.id == bindparam("id")
)


def existing_ids(conn: Connection, tenant_id: str, ids: Iterable[str]) -> set[str]:
    """The ids among ``ids`` the tenant has stored events for."""
    wanted = set(ids)
    if not wanted:
        return set()
    query = select(events.c.id).where(events.c.tenant_id == tenant_id)
    return set(conn.execute(restrict_to(conn, query, events.c.id, wanted)).scalars())


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert events, skipping ids already stored; return the ids inserted now.

    Rows are written in id order, so two batches sharing events take the key
    locks in the same order (one waits for the other rather than deadlocking).
    """
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    if len(ordered) >= MANY:
        return set(insert_new_copied(conn, events, ordered, events.c.id, ("tenant_id", "id")))
    return set(insert_new(conn, events, ordered, events.c.id))


def get_event(conn: Connection, tenant_id: str, event_id: str) -> RowMapping | None:
    """One event of the tenant by its id, or None."""
    return conn.execute(_BY_ID, {"tenant_id": tenant_id, "id": event_id}).mappings().first()


def _conditions(
    tenant_id: str,
    name: str | None,
    contact_id: str | None,
    occurred_after: datetime | None,
    occurred_before: datetime | None,
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [events.c.tenant_id == tenant_id]
    if name is not None:
        conds.append(events.c.name == name)
    if contact_id is not None:
        conds.append(events.c.contact_id == contact_id)
    if occurred_after is not None:
        conds.append(events.c.occurred_at >= occurred_after)
    if occurred_before is not None:
        conds.append(events.c.occurred_at < occurred_before)
    return conds


def list_events(
    conn: Connection,
    tenant_id: str,
    *,
    name: str | None = None,
    contact_id: str | None = None,
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
    count_cap: int,
) -> tuple[list[RowMapping], int]:
    """A page of events, latest ``occurred_at`` first, and how many match (≤ ``count_cap + 1``).

    Args:
        conn: connection.
        tenant_id: the tenant.
        name: only events with this name.
        contact_id: only events resolved to this contact.
        occurred_after: only events that occurred at or after this time.
        occurred_before: only events that occurred before this time.
        limit: how many rows at most (ask for one more to learn if more follow).
        offset: rows to skip.
        after: keyset position: only events after this one in list order.
        count_cap: count exactly up to this many matches.
    """
    conds = _conditions(tenant_id, name, contact_id, occurred_after, occurred_before)
    query = select(events).where(*conds)
    if after is not None:
        occurred_at, event_id = after
        bound = tuple_(
            literal(occurred_at, type_=events.c.occurred_at.type),
            literal(event_id, type_=events.c.id.type),
        )
        query = query.where(tuple_(events.c.occurred_at, events.c.id) < bound)
    query = query.order_by(events.c.occurred_at.desc(), events.c.id.desc())
    rows = list(conn.execute(query.limit(limit).offset(offset or None)).mappings())
    matching = select(literal(1)).select_from(events).where(*conds).limit(count_cap + 1)
    total = conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
    return rows, int(total)
