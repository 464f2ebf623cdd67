"""Dry-run result wire schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class DryRunResult(BaseModel):
    """What a dry run found the automation would have done for one contact on one day."""

    id: str
    dry_run_id: str = Field(description="the dry run that produced this result")
    automation_id: str
    run_at: str = Field(description="the simulated day, `YYYY-MM-DD`")
    profile_id: str | None = Field(description="the contact simulated")
    result_type: str = Field(description="what `result_id` names: `run`, a simulated run")
    result_id: str | None = Field(
        description="the simulated run (listed by `GET /runs?dry_run=true`)"
    )
    status: Literal["success", "failed", "skipped"]
    result: Any = Field(description="step by step, what would have happened")
    arguments: Any = Field(description="the arguments the dry run was requested with")
    requested_by: str | None = Field(
        description="the key that asked for it: its label, or its id when it has no label"
    )
    real_run_id: str | None = Field(
        description="a real run of the same automation for this contact and day, if any"
    )
    agrees: bool | None = Field(
        description="whether the simulation reached the same steps and messages as `real_run_id`"
    )
    created_at: str
    updated_at: str
