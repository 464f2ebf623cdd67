"""Run history wire schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RunEvent(BaseModel):
    """One line of a run's history."""

    seq: int = Field(description="position in the run's history, from 1; the SSE event id")
    type: str = Field(description="what happened, e.g. `step.completed`; the SSE event name")
    step_key: str | None = Field(description="the step it is about, if any")
    data: dict[str, Any] = Field(description="details, by type")
    created_at: str = Field(description="when it was written (RFC 3339, UTC)")


class RunEventPage(BaseModel):
    """A page of a run's history, oldest first."""

    items: list[RunEvent] = Field(description="up to `limit` lines after `after`, oldest first")
    next_after: int | None = Field(
        description="pass as `after` to get the next page; null on the last page"
    )
