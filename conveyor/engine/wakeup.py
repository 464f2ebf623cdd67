"""Wake-ups across processes: PostgreSQL ``LISTEN/NOTIFY``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from conveyor.store.db import Database
from conveyor.store.tasks import CANCEL_CHANNEL, NOTIFY_CHANNEL

log = logging.getLogger("conveyor.worker")


class PgListener:
    """Calls ``on_notify`` when due work was enqueued, ``on_signal`` when a run was cancelled."""

    def __init__(
        self,
        db: Database,
        on_notify: Callable[[], None],
        on_signal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.conninfo = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_notify = on_notify
        self.on_signal = on_signal

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after errors (polling covers the gap).

        A failure is logged once, not at every reconnection attempt.
        """
        failing = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    if failing:
                        log.warning("listening for wake-ups again")
                        failing = False
                    self.on_notify()  # anything enqueued while we were not listening
                    async for note in conn.notifies():
                        if note.channel == CANCEL_CHANNEL:
                            if self.on_signal is not None:
                                self.on_signal("cancel", note.payload)
                        else:
                            self.on_notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning("LISTEN connection failed (%s); retrying every second", reason)
                    failing = True
                await asyncio.sleep(1.0)
