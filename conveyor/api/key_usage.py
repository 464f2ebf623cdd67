"""When each API key was last used, written in the background at most once a minute.

Writing ``last_used_at`` on every request would add a write to every read
and make every request of a key contend for its row. Instead a request notes
the use in memory (``KeyUsage.used``), and a background task of the server
writes the noted times every few seconds (``KeyUsage.run``). A key whose
recorded last use is less than a minute old is not noted again, so each key
is written at most once a minute per process; and the update never moves the
time back, so several processes agree.

Precision is therefore a minute (plus the flush interval): enough to tell a
key in use from one forgotten for months, which is what the field is for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio

from conveyor.services.keys import Principal, record_use
from conveyor.store.db import Database, is_unavailable

log = logging.getLogger(__name__)

RESOLUTION = timedelta(minutes=1)


@dataclass
class KeyUsage:
    """Last uses noted by requests, waiting to be written."""

    db: Database
    flush_seconds: float = 5.0
    _pending: dict[str, datetime] = field(default_factory=dict)
    # The last time noted per key, so a key is noted once a minute, not per request.
    _noted: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def used(self, principal: Principal, now: datetime) -> None:
        """Note that ``principal`` made a request at ``now`` (cheap: no database)."""
        with self._lock:
            last = self._noted.get(principal.key_id) or principal.last_used_at
            if last is not None and now - last < RESOLUTION:
                return
            self._noted[principal.key_id] = now
            self._pending[principal.key_id] = now

    def flush(self) -> int:
        """Write the noted uses; how many keys were written. Uses that fail to write stay."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            with self.db.transaction() as conn:
                record_use(conn, pending)
        except BaseException:
            with self._lock:  # keep them for the next flush (newer notes win)
                self._pending = {**pending, **self._pending}
            raise
        with self._lock:  # forget keys whose note is old: the table knows them
            oldest = max(pending.values()) - RESOLUTION
            self._noted = {k: t for k, t in self._noted.items() if t > oldest}
        return len(pending)

    async def run(self) -> None:
        """Flush every ``flush_seconds`` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except Exception as exc:  # the uses wait for the next flush
                    # An outage is expected and said once per flush in one line;
                    # anything else is a bug and gets its traceback.
                    log.warning(
                        "could not record API key use (%s); will retry",
                        type(exc).__name__,
                        exc_info=not is_unavailable(exc),
                    )
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except Exception:
                    log.warning("could not record API key use at shutdown", exc_info=True)
