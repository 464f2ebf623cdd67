"""Dry run wire schemas (the request's fields are on ``TriggerRequest``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Progress(BaseModel):
    """How much of a dry run is done."""

    done: int
    total: int


class DryRun(BaseModel):
    """A dry run with its progress."""

    model_config = ConfigDict(extra="forbid")

    id: str
    automation_id: str
    version: int
    status: str = Field(description="queued, running, completed, failed or cancelled")
    start_date: str
    end_date: str
    timezone: str
    profile_ids: list[str] | None
    arguments: dict[str, Any]
    requested_by: str | None = Field(
        description="the key that asked for it: its label, or its id when it has no label"
    )
    days: Progress
    contacts: Progress = Field(
        description="contact-days simulated; for event and schedule triggers the total "
        "grows as days are simulated"
    )
    counts: dict[str, int] = Field(description="results per status: success, failed, skipped")
    error: dict[str, Any] | None
    created_at: str
    updated_at: str
    completed_at: str | None
