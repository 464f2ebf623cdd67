"""CpuLimit: a thread's CPU limit, read from the CPU clock only when it may matter."""

from __future__ import annotations

import time

import pytest

from conveyor.domain import cpu
from conveyor.domain.cpu import CpuLimit


def _spin(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_limit_far_from_its_end_never_reads_the_cpu_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = []
    real = time.thread_time

    def counted() -> float:
        reads.append(1)
        return real()

    monkeypatch.setattr(cpu.time, "thread_time", counted)
    limit = CpuLimit(10.0)
    assert not any(limit.passed() for _ in range(1000))
    assert reads == []
    assert limit.until is None


def test_it_passes_once_the_thread_has_spent_its_seconds() -> None:
    limit = CpuLimit(0.05)
    _spin(0.02)
    assert not limit.passed()  # read now: 0.02 s spent of 0.05
    assert limit.until is not None
    _spin(0.04)
    assert limit.passed()


def test_waiting_before_the_first_reading_errs_early_never_late() -> None:
    """A thread that slept (no CPU) before the first reading is counted as having spent it."""
    before = time.perf_counter()
    limit = CpuLimit(0.2)
    time.sleep(0.05)  # over an eighth of the limit: the next check reads the CPU clock
    started = time.thread_time()
    waited = time.perf_counter() - before
    assert not limit.passed()
    while not limit.passed():
        pass
    spent = time.thread_time() - started
    assert spent <= 0.2  # never later than the limit's CPU seconds
    assert spent >= 0.2 - waited - 0.005  # early by what was waited, no more


def test_a_shared_deadline_makes_it_sooner() -> None:
    limit = CpuLimit(10.0, until=time.thread_time() + 0.02)
    assert limit.until is not None
    _spin(0.03)
    assert limit.passed()
