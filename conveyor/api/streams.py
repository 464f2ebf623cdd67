"""Server-sent event streams of run history and run changes (sse-starlette).

History lines and run changes are written by workers, perhaps in other
processes or on other machines, so a stream learns of them by polling the
database: one small indexed query per interval, each in its own short read
transaction (no session is held while waiting). Streams of the same run, or
of the same list, share one poll (``conveyor.api.stream_hub``). In-process wake-ups
(``Database.add_wakeup_listener``) cut a wait short, which helps ``conveyor
dev``; they are a shortcut, never what correctness rests on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI
from sse_starlette import EventSourceResponse, ServerSentEvent

from conveyor.domain.run_filters import RunFilters
from conveyor.services import run_history
from conveyor.services.run_history import ChangeFeed, HistoryPoll
from conveyor.store.db import Database

T = TypeVar("T")
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class StreamSettings:
    """Timings of the live streams (``app.state.streams``; tests make them short)."""

    ping_seconds: float = 15.0  # a comment line that keeps proxies from closing idle streams
    history_poll_seconds: float = 0.25
    # A run that ends while streamed keeps its history streams open this long
    # after its terminal line, for the lines that closely follow it.
    history_linger_seconds: float = 5.0
    changes_poll_seconds: float = 0.5
    # How far back each change poll re-reads, for writers whose transaction
    # commits after a later-stamped one (see ``ChangeFeed``).
    changes_lag_seconds: float = 2.0
    batch: int = 500
    # A client that does not take an event for this long is dropped.
    send_timeout_seconds: float = 30.0


def stream_settings(app: FastAPI) -> StreamSettings:
    """The application's stream timings."""
    settings = getattr(app.state, "streams", None)
    return settings if isinstance(settings, StreamSettings) else StreamSettings()


def wants_event_stream(accept: str | None) -> bool:
    """True when the ``Accept`` header asks for ``text/event-stream``."""
    return accept is not None and EVENT_STREAM in accept.lower()


class Nudge:
    """Wakes a waiting stream early when this process commits new work."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def _signal(self) -> None:
        # Called from whichever thread committed.
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def __aenter__(self) -> Nudge:
        self.db.add_wakeup_listener(self._signal)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.db.remove_wakeup_listener(self._signal)

    async def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if nudged."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
        self._event.clear()


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread (database work of a stream)."""
    return await anyio.to_thread.run_sync(fn, *args)


def poll_history(db: Database, run_id: str, after: int, limit: int) -> HistoryPoll:
    """One poll of a run's history, in its own short read transaction."""
    with db.read() as conn:
        return run_history.poll_history(conn, run_id, after, limit)


def poll_changes(db: Database, feed: ChangeFeed) -> list[tuple[str, dict[str, Any]]]:
    """One poll of a change feed, in its own short read transaction."""
    with db.read() as conn:
        return feed.poll(conn)


def event_stream(
    events: AsyncIterator[ServerSentEvent], settings: StreamSettings
) -> EventSourceResponse:
    """The SSE response for ``events``, with pings and a send timeout."""
    return EventSourceResponse(
        events,
        ping=settings.ping_seconds,
        send_timeout=settings.send_timeout_seconds,
        headers={"Cache-Control": "no-store"},
    )


def change_feed(
    tenant_id: str,
    filters: RunFilters,
    resume: run_history.Position | None,
    settings: StreamSettings,
) -> ChangeFeed:
    """A change feed with the application's timings."""
    return ChangeFeed(
        tenant_id,
        filters,
        resume=resume,
        lag=timedelta(seconds=settings.changes_lag_seconds),
        batch=settings.batch,
    )
