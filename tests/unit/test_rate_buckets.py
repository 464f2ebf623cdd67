"""How a rate and a burst become the moving window the limiter keeps."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.api.ratelimit import RateLimited, RateLimits, bucket


@pytest.mark.parametrize(
    ("rate", "burst", "amount", "seconds"),
    [
        ("50/second", 100, 100, 2),  # the default: bursts of 100, 50 a second after
        ("20/second", None, 40, 2),  # no burst given: twice one period's amount
        ("20/minute", None, 40, 120),
        ("1/second", 10, 10, 10),
        # A burst below one second's rate would cap the rate at the burst: a
        # benchmark asking for a million a second got 100 (429s from the 101st).
        ("1000000/second", 100, 1_000_000, 1),
        ("300/second", 100, 300, 1),
    ],
)
def test_a_rate_and_burst_become_a_window(
    rate: str, burst: int | None, amount: int, seconds: int
) -> None:
    item = bucket(rate, burst)
    assert (item.amount, item.get_expiry()) == (amount, seconds)


def test_the_limiter_starts_no_thread_and_still_limits() -> None:
    limits = RateLimits.of("1000/second", 1000, "20/second")
    limits.charge("warm-up")
    time.sleep(0.05)  # the library's own storage: its first timer has run out
    before = threading.active_count()
    for _ in range(5):
        limits.charge("k")  # the library's storage would start a timer thread here
        assert threading.active_count() == before
        time.sleep(0.02)  # ... and another one after this
    for _ in range(495):
        limits.charge("k")
    # The window still holds what it counted: 500 more fill the burst of 1,000.
    for _ in range(500):
        limits.charge("k")
    with pytest.raises(RateLimited):
        limits.charge("k")
