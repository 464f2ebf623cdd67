"""Dry-run result wire schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class DryRunResult(BaseModel):
    """What a dry run found the automation would have done for one contact on one day."""

    id: str = Field(description="the result's id (a UUID); its simulated run has the same id")
    dry_run_id: str = Field(description="the dry run that produced this result")
    automation_id: str = Field(description="the automation simulated")
    run_at: str = Field(description="the simulated day, `YYYY-MM-DD`")
    profile_id: str | None = Field(description="the contact simulated")
    result_type: str = Field(description="what `result_id` names: `run`, a simulated run")
    result_id: str | None = Field(
        description="the simulated run (listed by `GET /runs?dry_run=true`)"
    )
    status: Literal["success", "failed", "skipped"] = Field(
        description="failed: a step would have failed; skipped: a `filter` step would have "
        "stopped the run; success: neither"
    )
    result: Any = Field(
        description="step by step, what would have happened: `trigger`, `trigger_type`, "
        "`outcome`, `started_at`, `ended_at`, `steps` (and `reason`, `stopped`, `notes` when "
        "they apply)"
    )
    arguments: Any = Field(
        description="the arguments the dry run was requested with, normalised: `start_date`, "
        "`end_date`, `timezone`, `profile_ids`, `version`, `payload`"
    )
    requested_by: str | None = Field(
        description="the key that asked for it: its label, or its id when it has no label"
    )
    real_run_id: str | None = Field(
        description="a real run of the same automation for this contact and day, if any"
    )
    agrees: bool | None = Field(
        description="null while `real_run_id` is not finished (or there is none); true only "
        "when its status equals the simulated outcome and every step both runs have ended "
        "with the same status (and, if completed, the same branch)"
    )
    created_at: str = Field(description="when the result was stored (RFC 3339, UTC)")
    updated_at: str = Field(description="when it last changed (RFC 3339, UTC)")
