"""Run wire schemas."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Identity(BaseModel):
    """How a trigger names the contact a run is about."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["email", "external_id", "contact_id"]
    value: str = Field(min_length=1, max_length=500)


class TriggerRequest(BaseModel):
    """Start a run of the automation's current version."""

    # Unknown fields are refused rather than ignored: a client sending
    # `dry_run: true` to a server without dry runs must not start a real run.
    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(
        default_factory=dict, description="the trigger event's payload (`trigger.payload`)"
    )
    identity: Identity | None = Field(None, description="the contact the run is about")
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="a repeat with the same key returns the first run instead of starting another",
    )
    # Dry runs (docs/concepts.md, "Dry runs"): simulate instead of starting a run.
    dry_run: bool = Field(
        False, description="simulate the automation over a date range; 202 with the dry run"
    )
    start_date: date | None = Field(
        None,
        description="dry run: first day simulated (YYYY-MM-DD), local to `timezone`; "
        "default `end_date`, or today when both are absent",
    )
    end_date: date | None = Field(
        None,
        description="dry run: last day simulated, inclusive; "
        "default `start_date`, or today when both are absent",
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="dry run: the days' time zone (IANA name), which also says what "
        "'today' is; default the schedule trigger's, else UTC",
    )
    profile_ids: list[str] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="dry run: the contacts to simulate (required for manual triggers)",
    )
    version: int | None = Field(
        None, ge=1, description="dry run: the version to simulate; default the current one"
    )


class Run(BaseModel):
    """A run (summary or detail); the full shape is documented in the run endpoints."""

    model_config = ConfigDict(extra="allow")

    id: str
    automation_id: str
    automation_name: str
    status: str
    trigger_type: str
