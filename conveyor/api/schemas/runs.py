"""Run wire schemas."""

from __future__ import annotations

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


class Run(BaseModel):
    """A run (summary or detail); the full shape is documented in the run endpoints."""

    model_config = ConfigDict(extra="allow")

    id: str
    automation_id: str
    automation_name: str
    status: str
    trigger_type: str
