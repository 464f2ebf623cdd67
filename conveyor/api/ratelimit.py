"""Rate limits: no key or client takes more than its share of the API.

- **Per key**: ``CONVEYOR_RATE_LIMIT`` (default ``50/second``) with a burst of
  ``CONVEYOR_RATE_LIMIT_BURST`` (100). A request costs one, a batch of N items
  ``ceil(N / 100)``, and a live stream one when it opens.
- **Failed authentications per client address**: ``CONVEYOR_AUTH_FAILURE_LIMIT``
  (``20/second``, the same burst ratio). Once a client is over it, a request
  with a key is refused before the key is even looked up, so bogus keys do not
  cost a database read each.

Past a limit the answer is 429 ``rate_limited`` with ``Retry-After``.
``/healthz``, ``/readyz`` and ``/metrics`` are not limited.

A token bucket of rate R and burst B is kept as ``limits``' moving window of
B requests over B / R seconds (at least one, so a burst below one second's
rate is raised to it): bursts of B, R per second sustained. The counters
live in this process's memory: several server processes each limit on their
own (a client may get N times the rate from N processes); nothing is shared
between them yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from conveyor import metrics
from conveyor.domain.errors import ConveyorError

# One request's worth per this many items of a batch.
ITEMS_PER_TOKEN = 100


class RateLimited(ConveyorError):
    """Too many requests: wait for ``Retry-After`` seconds."""

    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def bucket(rate: str, burst: int | None = None) -> RateLimitItem:
    """The moving window standing for a token bucket of ``rate`` (``"50/second"``) and ``burst``.

    Without ``burst``, twice what ``rate`` allows in one of its periods.
    """
    item = parse(rate)
    per_second = item.amount / item.get_expiry()
    size = burst if burst is not None else 2 * item.amount
    if size < per_second:
        # The window is a whole number of seconds: a burst smaller than one
        # second's rate would cap the rate at the burst (1000000/second with
        # a burst of 100 would allow 100 a second). One second's worth it is.
        return RateLimitItemPerSecond(math.ceil(per_second), 1)
    return RateLimitItemPerSecond(size, max(1, round(size / per_second)))


def items_cost(count: int) -> int:
    """What a batch of ``count`` items costs."""
    return max(1, math.ceil(count / ITEMS_PER_TOKEN))


class _InlineExpiry(MemoryStorage):
    """``limits``' memory storage, expiring old entries inline instead of in timer threads.

    The library's storage starts a ``threading.Timer`` (a new thread) whenever
    none is alive, which at a hundred requests a second is a thread started
    per request or two: measurable CPU in ``serve``. Here the same expiry
    runs on the request's own thread, at most every ``EVERY`` seconds; a
    moving window reads only entries inside it, so the expiry only bounds
    memory. (Overrides a private hook of the version pinned in constraints.txt;
    tests/unit/test_rate_buckets.py fails if a thread is started again.)
    """

    EVERY = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()
        self._next_expiry = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + self.EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


@dataclass
class RateLimits:
    """The process's limiters (``app.state.rate_limits``)."""

    per_key: RateLimitItem
    per_client_failures: RateLimitItem

    def __post_init__(self) -> None:
        self._window = MovingWindowRateLimiter(_InlineExpiry())

    @classmethod
    def of(cls, rate: str, burst: int, failures: str) -> RateLimits:
        """Limits from the settings' texts."""
        return cls(bucket(rate, burst), bucket(failures))

    def charge(self, key_id: str, cost: int = 1) -> None:
        """Take ``cost`` from the key's bucket, or raise ``RateLimited``."""
        if not self._window.hit(self.per_key, "key", key_id, cost=cost):
            raise self._refusal(self.per_key, ("key", key_id), "this API key's rate limit")

    def check_client(self, address: str) -> None:
        """Refuse a client that failed to authenticate too often, before any look-up."""
        if not self._window.test(self.per_client_failures, "auth", address):
            raise self._refusal(
                self.per_client_failures,
                ("auth", address),
                "the limit of failed authentications from this address",
            )

    def failed(self, address: str) -> None:
        """A request from ``address`` failed to authenticate."""
        self._window.hit(self.per_client_failures, "auth", address)

    def _refusal(self, item: RateLimitItem, ids: tuple[str, str], what: str) -> RateLimited:
        metrics.RATE_LIMITED.labels(ids[0]).inc()
        stats = self._window.get_window_stats(item, *ids)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimited(
            f"too many requests: over {what}; retry after {wait} s", retry_after=wait
        )
