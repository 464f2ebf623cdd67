"""Run history and run changes: what the history route and the live streams read.

A run's history is its append-only ``run_events`` lines, numbered per run by
``seq``. A history stream polls for lines after the last ``seq`` it sent and
ends once the run has ended and every line written has been sent (see
``conveyor.api.stream_hub`` for the short wait after a run ends live). A
change feed follows the runs matching a list filter by ``updated_at``, for
dashboards.

Services take a connection and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import RunNotFound
from conveyor.domain.run_filters import RunFilters
from conveyor.domain.status import RunStatus
from conveyor.domain.times import iso
from conveyor.services.runs import run_summary
from conveyor.store import run_streams as stream_store
from conveyor.store import runs as run_store


def event_view(row: RowMapping) -> dict[str, Any]:
    """The wire form of one history line."""
    return {
        "seq": row["seq"],
        "type": row["type"],
        "step_key": row["step_key"],
        "data": row["data"],
        "created_at": iso(row["created_at"]),
    }


def check_run(conn: Connection, tenant_id: str, run_id: str) -> None:
    """Raise ``RunNotFound`` unless the tenant has this run."""
    if run_store.get_run(conn, run_id, tenant_id) is None:
        raise RunNotFound(f"run {run_id} not found")


def history_page(
    conn: Connection, tenant_id: str, run_id: str, *, after: int, limit: int
) -> dict[str, Any]:
    """Up to ``limit`` history lines after ``seq`` ``after``: ``{items, next_after}``.

    ``next_after`` is the ``after`` of the next page, or None on the last page.
    """
    check_run(conn, tenant_id, run_id)
    rows = run_store.get_events(conn, run_id, after_seq=after, limit=limit + 1)
    items = [event_view(r) for r in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next_after": items[-1]["seq"] if more and items else None}


@dataclass(frozen=True)
class HistoryPoll:
    """One poll of a run's history."""

    events: list[dict[str, Any]]
    # The run has ended and every line written so far is in `events` or was
    # sent before: nothing more is due now (a late line may still come).
    finished: bool
    more: bool = False  # a full batch: poll again at once
    ended: bool = False  # the run had ended (or was gone) when polled


def poll_history(conn: Connection, run_id: str, after: int, limit: int) -> HistoryPoll:
    """The lines after ``after`` (at most ``limit``), and whether the run has ended.

    Every line is returned, those written after the run's terminal line too
    (``wait.late_event_ignored``, ``run.retried``, ``run.repaired``, ``run.erased``): a finished
    run's stream carries what its JSON history holds. Reads the run's progress
    (a primary-key lookup) first and the lines only when there are new ones, so
    an idle poll costs one tiny query.
    """
    progress = stream_store.get_progress(conn, run_id)
    if progress is None:  # deleted meanwhile (pruned): nothing more will come
        return HistoryPoll([], finished=True, ended=True)
    ended = RunStatus(progress["status"]).terminal
    written = int(progress["event_seq"])
    if written <= after:
        return HistoryPoll([], finished=ended, ended=ended)
    rows = run_store.get_events(conn, run_id, after_seq=after, limit=limit)
    events = [event_view(row) for row in rows]
    last = events[-1]["seq"] if events else after
    # The status and `event_seq` change in the transaction that writes the
    # terminal line, so once both are read every line up to `written` is there.
    return HistoryPoll(
        events, finished=ended and last >= written, more=len(rows) == limit, ended=ended
    )


# -- run changes -------------------------------------------------------------

_MAX_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"


@dataclass(frozen=True, order=True)
class Position:
    """A place in a change feed: ``(updated_at, run id)``, written ``<updated_at>|<id>``."""

    updated_at: datetime
    run_id: str

    def encode(self) -> str:
        """The text form, used as the SSE event id."""
        return f"{iso(self.updated_at)}|{self.run_id}"

    @classmethod
    def decode(cls, text: str) -> Position:
        """Parse ``encode``'s form; ``ValueError`` if it is not one."""
        at, sep, run_id = text.strip().partition("|")
        if not sep:
            raise ValueError("expected `<updated_at>|<run id>`")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("the time must carry a timezone")
        return cls(when.astimezone(UTC), str(UUID(run_id)))


@dataclass
class ChangeFeed:
    """Follows the runs matching ``filters``: each poll returns the ones changed since.

    A change is a new ``updated_at``. ``updated_at`` is stamped by the writer
    before its transaction commits, so a change can become visible after a
    later-stamped one was already read; each poll therefore re-reads the last
    ``lag`` before the newest change seen (ids and times only) and skips what
    it has already sent. Every change is sent at least once; a summary is a
    snapshot, so a repeat is harmless.

    Without ``resume`` the feed starts after the newest change at its first
    poll (the client has just listed the runs); with ``resume`` (a previous
    event id) it starts after that position.
    """

    tenant_id: str
    filters: RunFilters
    resume: Position | None = None
    lag: timedelta = timedelta(seconds=2)
    batch: int = 500
    _seen: dict[str, datetime] = field(default_factory=dict)
    _watermark: datetime | None = None
    _position: Position | None = None
    _started: bool = False

    @property
    def position(self) -> str | None:
        """Where the feed is: the id of its last event, or where it started."""
        return self._position.encode() if self._position is not None else None

    def poll(self, conn: Connection) -> list[tuple[str, dict[str, Any]]]:
        """The changes since the last poll: ``(event id, run summary)``, oldest first."""
        floor: Position | None = None
        if not self._started:
            self._started = True
            floor = self.resume or self._newest(conn)
            self._position = floor
            self._watermark = floor.updated_at if floor is not None else None
        found = self._scan(conn)
        if found:
            newest = max(found.values())
            self._watermark = max(self._watermark or newest, newest)
        fresh: list[str] = []
        for run_id, at in found.items():
            if floor is not None and Position(at, run_id) <= floor:
                self._seen[run_id] = at  # the client had it when it (re)connected
            elif run_id not in self._seen or at > self._seen[run_id]:
                fresh.append(run_id)
        rows = sorted(stream_store.get_runs(conn, fresh), key=lambda r: (r["updated_at"], r["id"]))
        out: list[tuple[str, dict[str, Any]]] = []
        for row in rows:
            here = Position(row["updated_at"], row["id"])
            # Event ids only move forward, so resuming from any of them skips
            # nothing that was not sent before it.
            self._position = max(self._position, here) if self._position else here
            self._seen[row["id"]] = row["updated_at"]
            out.append((self._position.encode(), run_summary(row)))
        self._forget()
        return out

    def _newest(self, conn: Connection) -> Position | None:
        latest = stream_store.latest_change(conn, self.tenant_id, self.filters)
        return Position(latest, _MAX_ID) if latest is not None else None

    def _scan(self, conn: Connection) -> dict[str, datetime]:
        since = self._watermark - self.lag if self._watermark is not None else None
        found: dict[str, datetime] = {}
        after: tuple[datetime, str] | None = None
        while True:
            page = stream_store.changed_since(
                conn, self.tenant_id, self.filters, since=since, after=after, limit=self.batch
            )
            for r in page:
                found[r["id"]] = r["updated_at"]
            if len(page) < self.batch:
                return found
            after = (page[-1]["updated_at"], page[-1]["id"])

    def _forget(self) -> None:
        # What is older than the re-read window is never read again.
        if self._watermark is not None and len(self._seen) > 2 * self.batch:
            cutoff = self._watermark - self.lag
            self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
