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

    id: str = Field(description="the run's id (a UUID)")
    tenant_id: str = Field(description="the tenant it belongs to")
    automation_id: str = Field(description="the automation it is a run of")
    automation_name: str = Field(description="that automation's name when the run was created")
    automation_version_id: str = Field(description="the version the run is pinned to")
    version_number: int = Field(description="the number of that version")
    status: RunStatus = Field(description="where the run is (see the state machine)")
    trigger_type: str = Field(
        examples=["manual"],
        description="what started it: `manual`, `event`, `schedule`, `automation_failure`, "
        "`retry` (a retry or replay), `automation` (a child run) or `dry_run` (a dry run's "
        "simulated run)",
    )
    trigger_source_type: str = Field(
        examples=["api_key"],
        description="who started it: `api_key`, `event`, `schedule`, `automation` (a failed "
        "run, or a parent run), `bulk_operation` (a bulk replay) or `dry_run`",
    )
    trigger_source_id: str | None = Field(
        description="which one: the key's id, the event's id, the automation's own id "
        "(schedule), the failed or parent run's id, the bulk operation's or dry run's id"
    )
    identity: dict[str, Any] | None = Field(description="`{type, value}` the trigger named")
    concurrency_key: str | None = Field(
        description="the value of the automation's concurrency `key` for this run"
    )
    idempotency_key: str | None = Field(
        description="the key that makes a repeated trigger return this run"
    )
    retry_of: str | None = Field(description="the run this one retries or replays")
    root_run_id: str | None = Field(
        None, description="the first run of its retry chain (null for a run that retries none)"
    )
    parent_run_id: str | None = Field(
        None, description="the run whose `trigger_automation` step started it (a child run)"
    )
    contact_id: str | None = Field(
        None, description="the contact the run is about; null when its trigger named none"
    )
    dry_run: bool = Field(description="true for a dry run's simulated run record")
    orchestrator_type: str = Field(examples=["local"], description="always `local`")
    error: dict[str, Any] | None = Field(description="why the run ended badly, if it did")
    created_at: datetime = Field(description="when the run was created (RFC 3339, UTC)")
    started_at: datetime | None = Field(description="when a worker started it; null until then")
    completed_at: datetime | None = Field(
        description="when it reached its terminal status; null until then"
    )
    updated_at: datetime = Field(description="when anything about it last changed")
    duration_seconds: float | None = Field(
        description="seconds from `started_at` to `completed_at`; null until both are known"
    )


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunSummary] = Field(description="this page's runs, newest first")
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

    attempt: int = Field(description="its number, from 1")
    status: str = Field(
        examples=["succeeded"],
        description="`running`, `succeeded`, `failed`, `timed_out`, `lost` (its worker died "
        "or lost its lease) or `cancelled`",
    )
    worker_id: str | None = Field(description="the worker that made it")
    started_at: datetime = Field(description="when it started (RFC 3339, UTC)")
    ended_at: datetime | None = Field(description="when it ended; null while running")
    duration_seconds: float | None = Field(description="its length in seconds, once ended")
    error: dict[str, Any] | None = Field(
        description="why it failed: `code`, `message` and maybe `details`"
    )


class StepView(BaseModel):
    """One step of a run, with its attempts and its output (up to the inline limit)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="the step run's id")
    key: str = Field(description="the step's key in the definition")
    name: str | None = Field(description="the step's display name, if it has one")
    type: str = Field(description="the step type (`http_request`, `delay`, ...)")
    status: StepStatus = Field(description="where the step is")
    depends_on: list[str] = Field(description='dependencies: `"step"` or `"step.branch"`')
    branch_taken: str | None = Field(
        description="the branch it took (`true`/`false`, `received`/`timed_out`), if any"
    )
    halted: bool = Field(description="a `filter` step that stopped the run here")
    skip_reason: str | None = Field(description="why it was skipped or cancelled, for people")
    reused_from: str | None = Field(description="the run whose result was reused by a retry")
    attempt_count: int = Field(description="how many attempts were made")
    attempts: list[StepAttempt] = Field(description="its attempts, first first")
    next_attempt_at: datetime | None = Field(description="when a scheduled retry runs")
    wake_at: datetime | None = Field(description="when a parked wait or delay wakes up")
    error: dict[str, Any] | None = Field(
        description="why it failed: `code`, `message` and maybe `details`"
    )
    started_at: datetime | None = Field(description="when it started; null until then")
    completed_at: datetime | None = Field(
        description="when it completed, failed, was skipped or cancelled; null until then"
    )
    duration_seconds: float | None = Field(description="seconds from start to end, once ended")
    result: Any = Field(description="the output; null when over the inline limit")
    result_truncated: bool = Field(
        description="true when the output is over the inline limit: get it from "
        "`/runs/{id}/steps/{key}/output`"
    )
    result_size: int = Field(description="size of the output as JSON, in bytes")


class StepCounts(BaseModel):
    """How many steps of the run are in each status."""

    pending: int = Field(description="steps not started yet")
    running: int = Field(description="steps being executed")
    waiting: int = Field(description="steps parked (delays, waits, child runs)")
    completed: int = Field(description="steps that completed")
    failed: int = Field(description="steps that failed")
    skipped: int = Field(description="steps that will not run")
    cancelled: int = Field(description="steps cancelled with the run")


class RunSteps(BaseModel):
    """A run's steps, in definition order, with counts per status."""

    run_id: str = Field(description="the run's id")
    run_status: RunStatus = Field(description="the run's status")
    steps: list[StepView] = Field(description="its steps, in definition order")
    counts: StepCounts = Field(description="how many steps are in each status")
    pending_count: int = Field(description="`counts.pending`")
    running_count: int = Field(description="`counts.running`")
    waiting_count: int = Field(description="`counts.waiting`")
    completed_count: int = Field(description="`counts.completed`")
    failed_count: int = Field(description="`counts.failed`")
    skipped_count: int = Field(description="`counts.skipped`")
    cancelled_count: int = Field(description="`counts.cancelled`")


class StepOutput(BaseModel):
    """A step's whole output."""

    run_id: str = Field(description="the run's id")
    step_key: str = Field(description="the step's key")
    status: StepStatus = Field(description="the step's status")
    result: Any = Field(description="the output, whole, as the step produced it")
    result_size: int = Field(description="size of the output as JSON, in bytes")
