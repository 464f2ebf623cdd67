"""Live streams share their database polls, and each key and tenant holds only so many.

A thousand people watching one run, or one tenant's run list with the same
filters, cost one poll per tick, not a thousand: the first stream of a run
(or of a tenant's list and filters) starts a poller; the others follow it.

- **A run's history**: the poller reads the run's lines once, then each new
  line as it is written, and keeps them for its followers, each of which sends
  the lines after its own ``after``. Every line is sent, those written after
  the run's terminal line too (``wait.late_event_ignored``, ``run.retried``).
  A run that had ended when the poller started is replayed whole and the
  streams end; one that ends while streamed keeps its streams open
  ``history_linger_seconds`` (5 s) after its terminal line, for lines that
  follow it closely (an event that lost the race with a wait's timeout), then
  they end. The poller also stops when its last follower goes.
- **A run list**: followers of the same (tenant, filters) share a change feed
  and get the changes made after they joined (as a lone stream would). A
  stream that resumes from a ``Last-Event-ID`` catches up on a feed of its own.

**Caps**: at most ``CONVEYOR_MAX_STREAMS_PER_KEY`` (10) open streams per API
key and ``CONVEYOR_MAX_STREAMS_PER_TENANT`` (50) per tenant; past either,
``429 too_many_streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from conveyor.api.ratelimit import RateLimited
from conveyor.api.safe_json import dumps
from conveyor.api.streams import Nudge, StreamSettings, in_thread, poll_changes, poll_history
from conveyor.services.keys import Principal
from conveyor.services.run_history import ChangeFeed
from conveyor.store.db import Database

# A follower that falls this many events behind its list feed is dropped (it
# reconnects with Last-Event-ID and catches up on its own).
QUEUE_SIZE = 10_000


class TooManyStreams(RateLimited):
    """Too many live streams open for this API key or tenant."""

    code = "too_many_streams"


@dataclass
class StreamCaps:
    """Open streams per key and per tenant, against their caps (any thread may count)."""

    per_key: int
    per_tenant: int
    _keys: Counter[str] = field(default_factory=Counter)
    _tenants: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, principal: Principal) -> Ticket:
        """Count a stream in and return its ticket, or raise ``TooManyStreams``."""
        with self._lock:
            if self._keys[principal.key_id] >= self.per_key:
                raise TooManyStreams(
                    f"this API key has {self.per_key} live streams open already; close one first",
                    retry_after=5,
                )
            if self._tenants[principal.tenant_id] >= self.per_tenant:
                raise TooManyStreams(
                    f"this tenant has {self.per_tenant} live streams open already; close one first",
                    retry_after=5,
                )
            self._keys[principal.key_id] += 1
            self._tenants[principal.tenant_id] += 1
        return Ticket(self, principal)

    def _close(self, principal: Principal) -> None:
        with self._lock:
            self._keys[principal.key_id] -= 1
            self._tenants[principal.tenant_id] -= 1
            if self._keys[principal.key_id] <= 0:
                del self._keys[principal.key_id]
            if self._tenants[principal.tenant_id] <= 0:
                del self._tenants[principal.tenant_id]


class Ticket:
    """One open stream's place under the caps; given back once, however the stream ends."""

    def __init__(self, caps: StreamCaps, principal: Principal) -> None:
        self._caps, self._principal = caps, principal
        self._open = True

    def close(self) -> None:
        """Give the place back (again is harmless)."""
        if self._open:
            self._open = False
            self._caps._close(self._principal)

    def follow(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
        """``events``, giving the place back when the stream ends, or is never started."""

        async def guarded() -> AsyncIterator[ServerSentEvent]:
            try:
                async for event in events:
                    yield event
            finally:
                self.close()

        stream = guarded()
        # A response whose body was never sent (the client went at once) never runs
        # the generator's `finally`: give the place back when it is collected.
        weakref.finalize(stream, self.close)
        return stream


class _Signal:
    """Wakes every waiter at once, with no lost wake-up (each wait takes the current event)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


class _History:
    """One run's history, polled once for all its followers."""

    def __init__(self, hub: StreamHub, run_id: str) -> None:
        self.hub, self.run_id = hub, run_id
        self.lines: list[dict[str, Any]] = []
        self.finished = False
        self.followers = 0
        self.changed = _Signal()
        self.task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        after, settings = 0, self.hub.settings
        loop = asyncio.get_running_loop()
        watched = False  # a poll saw the run still going: it ended while streamed
        closes_at: float | None = None
        try:
            async with Nudge(self.hub.db) as nudge:
                while self.followers > 0:
                    poll = await in_thread(
                        poll_history, self.hub.db, self.run_id, after, settings.batch
                    )
                    if poll.events:
                        self.lines += poll.events
                        after = poll.events[-1]["seq"]
                        self.changed.fire()
                    watched = watched or not poll.ended
                    if poll.finished:
                        if not watched:  # replaying a finished run: all it has is sent
                            return
                        if closes_at is None:
                            closes_at = loop.time() + settings.history_linger_seconds
                    if closes_at is not None and loop.time() >= closes_at:
                        return
                    if poll.more:
                        continue
                    pause = settings.history_poll_seconds
                    if closes_at is not None:
                        pause = min(pause, closes_at - loop.time())
                    await nudge.wait(pause)
        finally:
            self.finished = True  # the end, or a failed poll: its followers' streams end
            self.changed.fire()

    async def follow(self, after: int) -> AsyncIterator[dict[str, Any]]:
        index = 0
        while True:
            changed = self.changed.current()
            while index < len(self.lines):
                line = self.lines[index]
                index += 1
                if line["seq"] > after:
                    yield line
            if self.finished:
                return
            await changed.wait()


class _Changes:
    """One (tenant, filters) change feed, polled once for all its followers."""

    def __init__(self, hub: StreamHub, feed: ChangeFeed) -> None:
        self.hub, self.feed = hub, feed
        self.queues: set[asyncio.Queue[tuple[str, dict[str, Any]] | None]] = set()
        self.polled = asyncio.Event()  # the first poll is done: the feed has a position
        self.task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        try:
            async with Nudge(self.hub.db) as nudge:
                while self.queues:
                    for change in await in_thread(poll_changes, self.hub.db, self.feed):
                        for queue in list(self.queues):
                            try:
                                queue.put_nowait(change)
                            except asyncio.QueueFull:  # too slow a reader: it reconnects
                                self.queues.discard(queue)
                                with contextlib.suppress(asyncio.QueueFull):
                                    queue.put_nowait(None)
                    self.polled.set()
                    await nudge.wait(self.hub.settings.changes_poll_seconds)
        finally:
            self.polled.set()
            for queue in list(self.queues):  # a failed poll ends its followers' streams
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)


@dataclass
class StreamHub:
    """The application's shared pollers (``app.state.stream_hub``)."""

    db: Database
    caps: StreamCaps
    timings: Callable[[], StreamSettings]  # read at each use: tests change them
    _histories: dict[str, _History] = field(default_factory=dict)
    _changes: dict[tuple[str, str], _Changes] = field(default_factory=dict)

    @property
    def settings(self) -> StreamSettings:
        """The stream timings now."""
        return self.timings()

    async def history(self, run_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
        """A run's history after ``after``, then each new line; ends when the run has ended."""
        history = self._histories.get(run_id)
        if history is None or history.finished:
            history = self._histories[run_id] = _History(self, run_id)
        history.followers += 1
        if history.task is None:
            history.task = asyncio.create_task(history.poll())
        try:
            async for line in history.follow(after):
                yield ServerSentEvent(
                    data=dumps(line, where=f"the history stream of run {run_id}"),
                    event=line["type"],
                    id=str(line["seq"]),
                )
        finally:
            history.followers -= 1
            if history.followers == 0 and self._histories.get(run_id) is history:
                del self._histories[run_id]

    async def changes(
        self, tenant_id: str, key: str, make_feed: Callable[[], ChangeFeed], shared: bool
    ) -> AsyncIterator[ServerSentEvent]:
        """``run`` events for the changes of a list after the stream joined, then ``ready``."""
        group_key = (tenant_id, key)
        group = self._changes.get(group_key) if shared else None
        if group is None:
            group = _Changes(self, make_feed())
            if shared:
                self._changes[group_key] = group
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(QUEUE_SIZE)
        group.queues.add(queue)
        if group.task is None:
            group.task = asyncio.create_task(group.poll())
        try:
            await group.polled.wait()
            while not queue.empty():  # what the first poll brought (a resumed feed's catch-up)
                item = queue.get_nowait()
                if item is None:
                    return
                yield _change_event(*item)
            position = group.feed.position
            yield ServerSentEvent(
                data=json.dumps({"position": position}), event="ready", id=position
            )
            while (item := await queue.get()) is not None:
                yield _change_event(*item)
        finally:
            group.queues.discard(queue)
            if not group.queues and self._changes.get(group_key) is group:
                del self._changes[group_key]

    def opened(self, principal: Principal) -> Ticket:
        """A stream is about to be served: its ticket, or ``TooManyStreams`` past the caps."""
        return self.caps.open(principal)


def _change_event(event_id: str, summary: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        data=dumps(summary, where="a run change stream"), event="run", id=event_id
    )
