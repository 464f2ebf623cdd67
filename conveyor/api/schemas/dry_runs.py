"""Dry run wire schemas (the request's fields are on ``TriggerRequest``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Progress(BaseModel):
    """How much of a dry run is done."""

    done: int = Field(description="how many are simulated")
    total: int = Field(description="how many there are to simulate (so far)")


class DryRun(BaseModel):
    """A dry run with its progress."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the dry run's id (a UUID)")
    automation_id: str = Field(description="the automation simulated")
    version: int = Field(description="the version simulated")
    status: str = Field(description="queued, running, completed, failed or cancelled")
    start_date: str = Field(description="the first day simulated, `YYYY-MM-DD`")
    end_date: str = Field(description="the last day simulated, inclusive, `YYYY-MM-DD`")
    timezone: str = Field(description="the IANA time zone the days are local to")
    profile_ids: list[str] | None = Field(
        description="the contacts asked for, without repeats: only they are simulated; null: "
        "every contact the trigger finds (event and schedule triggers)"
    )
    arguments: dict[str, Any] = Field(
        description="the request, normalised: `start_date`, `end_date`, `timezone`, "
        "`profile_ids`, `version`, `payload`"
    )
    requested_by: str | None = Field(
        description="the key that asked for it: its label, or its id when it has no label"
    )
    days: Progress = Field(description="days simulated, of the range's days")
    contacts: Progress = Field(
        description="contact-days simulated; for event and schedule triggers the total "
        "grows as days are simulated"
    )
    counts: dict[str, int] = Field(description="results per status: success, failed, skipped")
    error: dict[str, Any] | None = Field(description="why it failed (status failed), else null")
    created_at: str = Field(description="when it was requested (RFC 3339, UTC)")
    updated_at: str = Field(description="when its progress last moved (RFC 3339, UTC)")
    completed_at: str | None = Field(
        description="when it completed, failed or was cancelled; null until then"
    )
