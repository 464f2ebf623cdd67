"""Event wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.run_filters import Time
from conveyor.api.schemas.runs import Identity


class EventIn(BaseModel):
    """One event to ingest."""

    # Unknown fields are refused: a misspelt `occured_at` must not be dropped silently.
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=200,
        description="your unique id for the event: sending it again stores and starts nothing",
    )
    name: str = Field(min_length=1, max_length=200, examples=["order.completed"])
    identity: Identity | None = Field(
        None, description="the contact the event is about (created on first sight)"
    )
    payload: dict[str, Any] = Field(default_factory=dict)
    occurred_at: Time | None = Field(
        None, description="RFC 3339 with `Z` or an offset; default: when it is received"
    )


class EventBatch(BaseModel):
    """Up to 1,000 events, each accepted or rejected on its own."""

    events: list[EventIn] = Field(max_length=1000)


class RunStarted(BaseModel):
    """A run an event started."""

    run_id: str
    automation_id: str
    automation_name: str


class TriggerError(BaseModel):
    """An automation listening for the event whose filter (or concurrency key) failed."""

    automation_id: str
    automation_name: str
    code: str = Field(examples=["expression_error"])
    detail: str


class EventResult(BaseModel):
    """What became of one event of the request."""

    index: int = Field(description="the event's position in the request (0 for a single event)")
    id: str | None = Field(description="the event's id, when it had one")
    status: Literal["accepted", "duplicate", "rejected"]
    code: str | None = Field(
        None, description="rejected: why, as a stable code (`validation_error`, ...)"
    )
    reason: str | None = Field(None, description="rejected: why, for people")
    errors: list[dict[str, Any]] | None = Field(
        None, description="`validation_error`: each problem as `{loc, msg, type}`"
    )
    contact_id: str | None = Field(None, description="the contact its identity resolved to")
    runs_started: list[RunStarted] | None = Field(
        None, description="accepted: the runs it started (none for a duplicate)"
    )
    trigger_errors: list[TriggerError] | None = Field(
        None, description="automations whose filter failed to evaluate (no run started for them)"
    )


class EventIngestion(BaseModel):
    """The outcome of `POST /events`, item by item."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class Event(BaseModel):
    """A stored event."""

    id: str
    name: str
    contact_id: str | None
    identity: Identity | None
    payload: dict[str, Any]
    occurred_at: datetime
    received_at: datetime


class EventPage(BaseModel):
    """One page of events."""

    items: list[Event]
    total: int = Field(description="how many events match, over all pages (see `total_exact`)")
    total_exact: bool = Field(
        description="false when more than 10,000 match: `total` is then a lower bound"
    )
    limit: int
    offset: int
    next_cursor: str | None
