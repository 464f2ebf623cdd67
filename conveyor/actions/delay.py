"""``delay``: park the step until a duration has passed or a time is reached."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from conveyor.actions.base import ActionContext, ActionResult
from conveyor.domain.times import Duration, Moment, iso


class DelaySettings(BaseModel):
    """Settings of `delay`: exactly one of `duration` or `until`.

    The step parks (`waiting`) until then, and outputs `{"waited_until": <time>}`.
    """

    model_config = ConfigDict(extra="forbid")
    duration: Duration | None = Field(
        None,
        description="how long to wait, counted from when the step starts: an ISO 8601 duration "
        "(`PT1H`; a number is read as seconds), not negative",
        examples=["PT1H"],
    )
    until: Moment | None = Field(
        None,
        description="when to wait until: an RFC 3339 time with a time zone; one in the past "
        "completes the step at once",
    )

    @model_validator(mode="after")
    def _one(self) -> DelaySettings:
        if (self.duration is None) == (self.until is None):
            raise PydanticCustomError(
                "invalid_setting", "give exactly one of `duration` or `until`"
            )
        if self.duration is not None and self.duration < timedelta(0):
            raise PydanticCustomError("invalid_setting", "`duration` cannot be negative")
        return self


class DelayAction:
    """Wait, durably: the deadline is stored and a timer wakes the run."""

    step_type: ClassVar[str] = "delay"
    settings_model: ClassVar[type[BaseModel]] = DelaySettings
    branches: ClassVar[frozenset[str]] = frozenset()
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = True

    def deadline(self, ctx: ActionContext) -> datetime:
        """When the delay ends, measured from the attempt's start."""
        assert isinstance(ctx.settings, DelaySettings)
        if ctx.settings.until is not None:
            return ctx.settings.until
        assert ctx.settings.duration is not None
        return ctx.now + ctx.settings.duration

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Park until the deadline; once woken, complete."""
        return self.simulate(ctx)

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Parking needs no I/O, so the engine does it inside its transaction."""
        return self.simulate(ctx)

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Same as execute: the (virtual) clock decides."""
        if ctx.resumed and ctx.wake_at is not None:
            return ActionResult(output={"waited_until": iso(ctx.wake_at)})
        until = self.deadline(ctx)
        if until <= ctx.now:
            return ActionResult(output={"waited_until": iso(until)})
        return ActionResult(park_until=until)
