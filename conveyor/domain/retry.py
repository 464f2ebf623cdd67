"""Retry policy: given an attempt that failed, decide whether and when to retry."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from conveyor.domain.times import Duration
from conveyor.domain.wire_types import Integer


class RetryPolicy(BaseModel):
    """Per-step retry settings. Absent means one attempt.

    Errors no retry can fix (a bad template, an expression error, a 4xx answer
    other than 408, 425 and 429) are not retried.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: Integer = Field(
        1, ge=1, le=100, description="attempts in all, the first included; 1: no retry"
    )
    initial_delay: Duration = Field(
        timedelta(seconds=1),
        description="ISO 8601 duration to wait before the second attempt (a number is read as "
        "seconds)",
    )
    backoff: StrictFloat = Field(
        2.0,
        ge=1.0,
        le=10.0,
        description="how the delay grows: before attempt n + 1 it is "
        "`initial_delay * backoff^(n-1)`",
    )
    max_delay: Duration = Field(
        timedelta(minutes=10), description="ISO 8601 duration: the cap on that delay"
    )
    jitter: StrictFloat = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="fraction of the delay drawn at random: the delay is drawn uniformly in "
        "`delay * (1 +/- jitter)`, after the cap",
    )

    def base_delay(self, attempt: int) -> timedelta:
        """Delay before attempt ``attempt + 1``, without jitter (attempt counts from 1)."""
        seconds = self.initial_delay.total_seconds() * self.backoff ** (attempt - 1)
        return timedelta(seconds=min(seconds, self.max_delay.total_seconds()))


NO_RETRY = RetryPolicy()


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a failed attempt."""

    retry: bool
    delay: timedelta = timedelta(0)


def decide(
    policy: RetryPolicy,
    attempt: int,
    *,
    retryable: bool = True,
    requested_delay: timedelta | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide whether attempt number ``attempt`` (from 1) is followed by another.

    Args:
        policy: the step's retry policy.
        attempt: how many counted attempts have been made, including this one.
        retryable: False for errors that no retry can fix (bad template, output too large).
        requested_delay: a delay the action asked for (``RetryableError(delay=...)``).
        rng: random source for jitter; tests pass a seeded one.
    """
    if not retryable or attempt >= policy.max_attempts:
        return RetryDecision(retry=False)
    if requested_delay is not None:
        return RetryDecision(retry=True, delay=requested_delay)
    base = policy.base_delay(attempt).total_seconds()
    spread = base * policy.jitter
    jittered = base - spread + (rng or random).random() * 2 * spread
    return RetryDecision(retry=True, delay=timedelta(seconds=max(jittered, 0.0)))
