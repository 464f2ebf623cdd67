"""A worker's heartbeat row: written at start, beaten with the leases, deleted on a clean stop.

``conveyor status`` reads the rows: a worker not seen for
``CONVEYOR_WORKER_DEAD_SECONDS`` is dead (killed, hung, or cut off from the
database). Every worker beats at least three times within that window, and
each beat also prunes the rows of workers dead for over ``KEEP_DEAD``, so a
crashed worker stays visible as "recently dead" for a while and then goes.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import Connection

from conveyor.domain.ids import new_id
from conveyor.settings import Settings
from conveyor.store import presence as store

# How long a dead worker's row is kept (for `conveyor status`) before a live worker prunes it.
KEEP_DEAD = timedelta(hours=1)


class Presence:
    """This worker process's row in ``workers``."""

    def __init__(self, settings: Settings) -> None:
        self.id = new_id()
        self.name = settings.worker_id
        self.slots_total = settings.worker_concurrency
        self.dead_after = timedelta(seconds=settings.worker_dead_seconds)
        # Leases and this row are beaten together, often enough for both.
        self.interval = min(settings.lease_seconds, settings.worker_dead_seconds) / 3
        self.started_at: datetime | None = None

    def register(self, conn: Connection, now: datetime) -> None:
        """Write the row (the worker starts); prune the long dead."""
        self.started_at = self.started_at or now
        store.register(
            conn,
            {
                "id": self.id,
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self.started_at,
                "last_seen_at": now,
                "slots_busy": 0,
                "slots_total": self.slots_total,
            },
        )
        store.prune(conn, now - self.dead_after - KEEP_DEAD)

    def beat(self, conn: Connection, now: datetime, slots_busy: int) -> None:
        """Mark the row seen; write it again if it is gone (pruned during a long outage)."""
        if not store.beat(conn, self.id, now, slots_busy):
            self.register(conn, now)
            store.beat(conn, self.id, now, slots_busy)
            return
        store.prune(conn, now - self.dead_after - KEEP_DEAD)

    def leave(self, conn: Connection) -> None:
        """Delete the row (a clean stop)."""
        store.remove(conn, self.id)
