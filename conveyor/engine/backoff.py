"""Waiting out a database that cannot be reached: capped, jittered back-off, and one log line.

Every loop of a worker (claiming, idle waits, rounds, heartbeats, schedules,
bulk operations, dry runs) retries work that failed because the database was
unreachable (``conveyor.store.db.is_unavailable``) instead of giving up: a
worker never exits unless told to. The delay doubles from ``BASE`` up to
``CAP`` and each wait is jittered (a random 50-100 % of it), so workers that
lost the database together do not come back in step. ``Outage`` logs the
start and the end of an outage once, not once per retry.
"""

from __future__ import annotations

import logging
import random
import time

from conveyor import metrics

log = logging.getLogger("conveyor.worker")

BASE = 0.1
CAP = 5.0


class Backoff:
    """Successive delays for one piece of work: 0.1 s, 0.2 s, ... up to 5 s, jittered."""

    def __init__(self, base: float = BASE, cap: float = CAP) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The delay before the next try."""
        delay: float = min(self.cap, self.base * 2.0**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)  # jitter, not a secret


class Outage:
    """Whether this process is waiting out the database, for its log."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    def failed(self, what: str, exc: BaseException) -> None:
        """A piece of work could not reach the database."""
        self.failures += 1
        metrics.DATABASE_ERRORS.labels(what, "unavailable").inc()
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "the database cannot be reached (%s: %s); waiting for it, nothing is dropped",
                what,
                type(exc).__name__,
            )

    def recovered(self) -> None:
        """A piece of work reached the database again."""
        if self.since is not None:
            log.warning(
                "the database is reachable again after %.1f s (%d tries waited)",
                time.monotonic() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0
