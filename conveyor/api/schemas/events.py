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
    name: str = Field(
        min_length=1,
        max_length=200,
        examples=["order.completed"],
        description="what happened; automations with an event trigger of this name start runs",
    )
    identity: Identity | None = Field(
        None,
        description="the contact the event is about: an email or external id seen for the first "
        "time creates it; a `contact_id` must name one (else the event is rejected, "
        "`unknown_contact`)",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="free JSON data, nested at most 63 levels (`event.payload`, and "
        "`trigger.payload` of the runs it starts)",
    )
    occurred_at: Time | None = Field(
        None, description="RFC 3339 with `Z` or an offset; default: when it is received"
    )


class EventBatch(BaseModel):
    """Up to 1,000 events, each accepted or rejected on its own.

    The body size limit (`CONVEYOR_MAX_BODY_BYTES`, 1 MiB by default) applies to
    the whole batch (413). One request starts at most
    `CONVEYOR_MAX_RUNS_PER_REQUEST` runs (2,000 by default): an event that would
    start more is rejected (`too_many_runs`), to be sent again.
    """

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(max_length=1000, description="the events, checked one by one")


class RunStarted(BaseModel):
    """A run an event started."""

    run_id: str = Field(description="the run's id")
    automation_id: str = Field(description="the automation it is a run of")
    automation_name: str = Field(description="that automation's name")


class TriggerError(BaseModel):
    """An automation listening for the event whose filter (or concurrency key) failed."""

    automation_id: str = Field(description="the automation whose filter (or key) failed")
    automation_name: str = Field(description="its name")
    code: str = Field(
        examples=["expression_error"],
        description="a stable error code, such as `expression_error`, `expression_timeout`, "
        "`expression_too_large` or `invalid_concurrency_key`",
    )
    detail: str = Field(description="what went wrong, for people")


class EventResult(BaseModel):
    """What became of one event of the request."""

    index: int = Field(description="the event's position in the request (0 for a single event)")
    id: str | None = Field(description="the event's id, when it had one")
    status: Literal["accepted", "duplicate", "rejected"] = Field(
        description="accepted: stored now; duplicate: an event with this id was stored before "
        "(or earlier in the request), nothing happens again; rejected: not stored"
    )
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

    accepted: int = Field(description="how many events were stored now")
    duplicates: int = Field(description="how many had been stored before")
    rejected: int = Field(description="how many were refused")
    results: list[EventResult] = Field(description="one result per event, in request order")


class Event(BaseModel):
    """A stored event."""

    id: str = Field(description="the id its sender gave it")
    name: str = Field(description="what happened")
    contact_id: str | None = Field(
        description="the contact its identity resolved to; null without an identity, or once "
        "the contact is deleted"
    )
    identity: Identity | None = Field(
        description="the identity it came with, in its normal form (emails lowercased)"
    )
    payload: dict[str, Any] = Field(description="its JSON data")
    occurred_at: datetime = Field(description="when it happened (RFC 3339, UTC)")
    received_at: datetime = Field(description="when it was stored (RFC 3339, UTC)")


class EventPage(BaseModel):
    """One page of events."""

    items: list[Event] = Field(description="this page's events, latest `occurred_at` first")
    total: int = Field(description="how many events match, over all pages (see `total_exact`)")
    total_exact: bool = Field(
        description="false when more than 10,000 match: `total` is then a lower bound"
    )
    limit: int = Field(description="the page size asked for (`limit`, default 100)")
    offset: int = Field(description="how many matching events were skipped (0 with a `cursor`)")
    next_cursor: str | None = Field(
        description="pass as `cursor` to get the next page; null on the last page"
    )
