"""Limits on the CPU time a thread spends, cheap to check while far from them.

This module reads clocks and nothing else: no I/O, no database.
"""

from __future__ import annotations

import time


class CpuLimit:
    """At most ``seconds`` of this thread's CPU from now, cheap to check while far from it.

    Reading the thread's CPU clock is a system call (~0.6 us, far more on a
    loaded machine), and most limits (one per step attempt, one per round)
    end long before they matter. So the CPU clock is first read once wall time
    (a cheap clock) says an eighth of the limit may have been spent: until
    then the thread cannot have spent more CPU than wall time passed. At that
    first reading all the wall time so far counts as spent, which errs early,
    never late, by what the thread waited meanwhile (for the GIL, say): at
    most an eighth of the limit plus one check's interval.
    """

    __slots__ = ("_started", "_until", "seconds")

    def __init__(self, seconds: float, until: float | None = None) -> None:
        self.seconds = seconds
        self._started = time.perf_counter()
        # ``until`` (a thread_time value) can only make it sooner: many limits
        # of one request share what the request may spend in all.
        self._until = None if until is None else min(until, time.thread_time() + seconds)

    @property
    def until(self) -> float | None:
        """The deadline as a thread_time value, once the CPU clock has been read."""
        return self._until

    def passed(self) -> bool:
        """Whether the thread has spent its ``seconds`` of CPU (or passed ``until``)."""
        if self._until is None:
            since = time.perf_counter() - self._started
            if since <= self.seconds / 8:
                return False
            self._until = time.thread_time() - since + self.seconds
        return time.thread_time() > self._until
