"""Stored events a day's simulated waits look through, read in bulk.

A wait in a simulated run asks "did this contact send this event between the
virtual time and the timeout?". Asked of the database once per contact-day it
was the biggest cost of a dry run, so a day task answers from memory instead:
the events of one name are read a UTC day ("chunk") at a time, for every
contact the day simulates, in one query per run of missing chunks, and each
question is then a filter over one contact's few events.

For a small set of contacts the query names them; for a large one it reads the
tenant's events of that name in the window (a range scan of the events index)
and drops the others in memory, which beats a ten-thousand-item ``IN`` list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection

from conveyor.store import dry_runs as store

# Up to this many contacts the query lists them; beyond, it reads the whole tenant.
NAMED_CONTACTS_MAX = 500
# A question that needs more UTC days than this not yet read is asked of the
# database for its one contact instead (memory stays bounded by a week or so).
MAX_LOAD_DAYS = 8

Event = Mapping[Any, Any]


def _chunk(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _chunk_start(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


class EventHistory:
    """The stored events of a day task's contacts, loaded a UTC day at a time."""

    def __init__(
        self, tenant_id: str, contact_ids: Collection[str], conn: Connection | None = None
    ) -> None:
        self.conn = conn  # what it reads through; a day task changes it per slice (``use``)
        self.tenant_id = tenant_id
        self.contact_ids = frozenset(contact_ids)
        # (event name, chunk day) -> contact id -> events of that day, oldest first
        self._chunks: dict[tuple[str, date], dict[str, list[Event]]] = {}
        self.queries = 0  # how many reads it took (tests check the batching)

    def use(self, conn: Connection) -> None:
        """Read through ``conn`` from now on (what was read stays held)."""
        self.conn = conn

    def events(self, name: str, contact_id: str, since: datetime, until: datetime) -> list[Event]:
        """``contact_id``'s ``name`` events with ``since <= occurred_at < until``, oldest first."""
        if until <= since:
            return []
        assert self.conn is not None, "EventHistory.use(conn) first"
        first, last = _chunk(since), _chunk(until - timedelta(microseconds=1))
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        missing = [d for d in days if (name, d) not in self._chunks]
        # A long window (a wait with no or a long timeout) would read weeks of the
        # tenant's events into memory for every day task: ask for this contact alone.
        if contact_id not in self.contact_ids or len(missing) > MAX_LOAD_DAYS:
            return list(
                store.events_between(
                    self.conn, self.tenant_id, name, since, until, contact_id=contact_id
                )
            )
        self._load(name, missing)
        out: list[Event] = []
        for day in days:
            for event in self._chunks[(name, day)].get(contact_id, ()):
                if since <= event["occurred_at"] < until:
                    out.append(event)
        return out

    def _load(self, name: str, missing: Sequence[date]) -> None:
        if not missing:
            return
        for day in missing:
            self._chunks[(name, day)] = defaultdict(list)
        # One query from the first missing day to the last (days already held in
        # between are read again and dropped: rare, and cheaper than more queries).
        since, until = _chunk_start(missing[0]), _chunk_start(missing[-1] + timedelta(days=1))
        named = self.contact_ids if len(self.contact_ids) <= NAMED_CONTACTS_MAX else None
        self.queries += 1
        assert self.conn is not None
        wanted = set(missing)
        for row in store.events_of_contacts(self.conn, self.tenant_id, name, since, until, named):
            contact, day = str(row["contact_id"]), _chunk(row["occurred_at"])
            if contact in self.contact_ids and day in wanted:
                self._chunks[(name, day)][contact].append(row)
