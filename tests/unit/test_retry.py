"""The retry policy returns a decision: whether to retry, and after how long."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from pydantic import ValidationError

from conveyor.domain.retry import NO_RETRY, RetryDecision, RetryPolicy, decide

SECOND = timedelta(seconds=1)


def _policy(**kw: object) -> RetryPolicy:
    defaults: dict[str, object] = {
        "max_attempts": 10,
        "initial_delay": SECOND,
        "backoff": 2.0,
        "max_delay": timedelta(seconds=30),
        "jitter": 0.0,
    }
    return RetryPolicy.model_validate({**defaults, **kw})


def test_backoff_sequence_without_jitter() -> None:
    policy = _policy()
    delays = [decide(policy, attempt).delay.total_seconds() for attempt in range(1, 7)]
    assert delays == [1, 2, 4, 8, 16, 30]  # the sixth would be 32, capped by max_delay


def test_base_delay_is_capped_by_max_delay() -> None:
    policy = _policy(initial_delay="PT10S", backoff=3.0, max_delay="PT1M")
    assert [policy.base_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(seconds=10),
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=60),
    ]


def test_a_backoff_of_one_is_a_constant_delay() -> None:
    policy = _policy(initial_delay="PT5S", backoff=1.0)
    assert {decide(policy, n).delay for n in range(1, 9)} == {timedelta(seconds=5)}


def test_jitter_stays_within_its_fraction_of_the_delay() -> None:
    policy = _policy(initial_delay="PT10S", jitter=0.1)
    rng = random.Random(1234)
    delays = [decide(policy, 1, rng=rng).delay.total_seconds() for _ in range(500)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    # it really spreads, on both sides of the base delay
    assert min(delays) < 9.5
    assert max(delays) > 10.5


def test_jitter_applies_after_the_cap() -> None:
    policy = _policy(initial_delay="PT10S", max_delay="PT20S", jitter=0.5)
    rng = random.Random(7)
    delays = [decide(policy, 8, rng=rng).delay.total_seconds() for _ in range(200)]
    assert all(10.0 <= d <= 30.0 for d in delays)


def test_a_seeded_random_source_makes_the_delay_repeatable() -> None:
    policy = _policy(jitter=0.3)
    first = [decide(policy, n, rng=random.Random(42)).delay for n in range(1, 5)]
    again = [decide(policy, n, rng=random.Random(42)).delay for n in range(1, 5)]
    assert first == again


def test_the_last_attempt_is_not_retried() -> None:
    policy = _policy(max_attempts=3)
    assert decide(policy, 2).retry is True
    assert decide(policy, 3) == RetryDecision(retry=False)
    assert decide(policy, 4) == RetryDecision(retry=False)


def test_no_policy_means_a_single_attempt() -> None:
    assert decide(NO_RETRY, 1) == RetryDecision(retry=False)


def test_a_non_retryable_error_is_never_retried() -> None:
    assert decide(_policy(), 1, retryable=False) == RetryDecision(retry=False)


def test_a_requested_delay_replaces_the_backoff() -> None:
    requested = timedelta(minutes=42)  # larger than max_delay: the action knows best
    decision = decide(_policy(jitter=0.5), 1, requested_delay=requested)
    assert decision == RetryDecision(retry=True, delay=requested)


def test_a_requested_delay_does_not_extend_the_attempts() -> None:
    assert decide(_policy(max_attempts=2), 2, requested_delay=SECOND).retry is False


def test_iso_durations_parse() -> None:
    policy = RetryPolicy.model_validate(
        {"max_attempts": 3, "initial_delay": "PT10S", "backoff": 2.0, "max_delay": "PT10M"}
    )
    assert policy.initial_delay == timedelta(seconds=10)
    assert policy.max_delay == timedelta(minutes=10)


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"backoff": 0.5},
        {"jitter": 1.5},
        {"unknown": 1},
    ],
)
def test_policy_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(bad)
