"""Wire schemas of run lists, run steps and step outputs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.status import RunStatus, StepStatus


class RunSummary(BaseModel):
    """A run as lists show it: no trigger event, no step data."""

    # Fields added to the summary later pass through rather than being dropped.
    model_config = ConfigDict(extra="allow")

    id: str
    tenant_id: str
    automation_id: str
    automation_name: str
    automation_version_id: str = Field(description="the version the run is pinned to")
    version_number: int
    status: RunStatus
    trigger_type: str = Field(examples=["manual"])
    trigger_source_type: str = Field(examples=["api_key"])
    trigger_source_id: str | None
    identity: dict[str, Any] | None = Field(description="`{type, value}` the trigger named")
    concurrency_key: str | None
    idempotency_key: str | None
    retry_of: str | None = Field(description="the run this one retries or replays")
    dry_run: bool
    orchestrator_type: str = Field(examples=["local"])
    error: dict[str, Any] | None = Field(description="why the run ended badly, if it did")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    duration_seconds: float | None


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunSummary]
    total: int = Field(
        description="how many runs match, over all pages: exact up to 10,000; past that, "
        "a lower bound (see `total_exact`)"
    )
    total_exact: bool = Field(
        description="false when more than 10,000 runs match and `total` is a lower bound"
    )
    limit: int = Field(description="the page size asked for")
    offset: int = Field(description="how many matching runs were skipped (0 with a cursor)")
    next_cursor: str | None = Field(
        description="pass as `cursor` to get the next page; null on the last page"
    )


class StepAttempt(BaseModel):
    """One attempt at executing a step."""

    attempt: int
    status: str = Field(examples=["succeeded"])
    worker_id: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None


class StepView(BaseModel):
    """One step of a run, with its attempts and its output (up to the inline limit)."""

    model_config = ConfigDict(extra="allow")

    id: str
    key: str
    name: str | None
    type: str
    status: StepStatus
    depends_on: list[str] = Field(description='dependencies: `"step"` or `"step.branch"`')
    branch_taken: str | None
    halted: bool = Field(description="a `filter` step that stopped the run here")
    skip_reason: str | None
    reused_from: str | None = Field(description="the run whose result was reused by a retry")
    attempt_count: int
    attempts: list[StepAttempt]
    next_attempt_at: datetime | None = Field(description="when a scheduled retry runs")
    wake_at: datetime | None = Field(description="when a parked wait or delay wakes up")
    error: dict[str, Any] | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    result: Any = Field(description="the output; null when over the inline limit")
    result_truncated: bool = Field(
        description="true when the output is over the inline limit: get it from "
        "`/runs/{id}/steps/{key}/output`"
    )
    result_size: int = Field(description="size of the output as JSON, in bytes")


class StepCounts(BaseModel):
    """How many steps of the run are in each status."""

    pending: int
    running: int
    waiting: int
    completed: int
    failed: int
    skipped: int
    cancelled: int


class RunSteps(BaseModel):
    """A run's steps, in definition order, with counts per status."""

    run_id: str
    run_status: RunStatus
    steps: list[StepView]
    counts: StepCounts
    pending_count: int
    running_count: int
    waiting_count: int
    completed_count: int
    failed_count: int
    skipped_count: int
    cancelled_count: int


class StepOutput(BaseModel):
    """A step's whole output."""

    run_id: str
    step_key: str
    status: StepStatus
    result: Any = Field(description="the output, whole, as the step produced it")
    result_size: int = Field(description="size of the output as JSON, in bytes")
