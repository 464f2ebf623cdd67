"""Principals of recently seen keys, kept per process for a few seconds.

Every request authenticates its key; without this, each is a database read
(and the idempotency layer's look-up a second one). A principal read from the
database is reused for ``ttl`` seconds (``CONVEYOR_AUTH_CACHE_SECONDS``, 0 turns
the cache off). What that costs in freshness, and what it does not:

- a key revoked through this process stops working at once (``forget_key``);
  one revoked elsewhere (another server process, ``conveyor keys revoke``) within
  ``ttl`` seconds;
- ``expires_at`` is checked on every request against the request's clock;
- unknown, revoked or expired tokens are never cached: a new key works at once
  and a bogus one is read every time (the failed-authentication limit, checked
  before, bounds those reads).

Only the token's SHA-256 is kept, as the database keeps it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from conveyor.services.keys import Principal, authenticate, hash_token
from conveyor.store.db import Database

MAX_ENTRIES = 10_000  # keys held at most; the least recently used go first


class PrincipalCache:
    """Token hash -> (principal, when it was read), bounded and thread-safe."""

    def __init__(self, ttl: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, token: str, now: datetime) -> Principal | None:
        """The principal of ``token`` if this process read it less than ``ttl`` ago and
        it has not expired by ``now``; None otherwise (then ``authenticate`` reads it).

        No I/O: callers on an event loop use it before sending a miss to a thread.
        """
        if self.ttl <= 0:
            return None
        digest = hash_token(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            principal, read_at = entry
            if self._monotonic() - read_at >= self.ttl or (
                principal.expires_at is not None and principal.expires_at <= now
            ):
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return principal

    def authenticate(self, db: Database, token: str, now: datetime) -> Principal | None:
        """The principal of ``token`` at ``now``: from the cache, or read (one read transaction)."""
        principal = self.cached(token, now)
        if principal is not None:
            return principal
        principal = _read(db, token, now)
        if principal is not None and self.ttl > 0:
            with self._lock:
                self._entries[hash_token(token)] = (principal, self._monotonic())
                while len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return principal

    def forget_key(self, key_id: str) -> None:
        """Drop the key's entries (it was revoked through this process)."""
        with self._lock:
            for digest in [d for d, (p, _) in self._entries.items() if p.key_id == key_id]:
                del self._entries[digest]


def _read(db: Database, token: str, now: datetime) -> Principal | None:
    with db.read() as conn:
        return authenticate(conn, token, now)
