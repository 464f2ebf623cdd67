"""Seed 003's wire schemas (for its OpenAPI document at `/seeds/003/openapi.json`).

The document gives no response bodies; these are the ones docs/seeds/003.md
writes down, in camelCase.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.compat.seed003_shape import SeedRunStatus, SeedStepStatus

_ERROR = "why it ended badly, if it did: `code` and `message`"


class SeedRun(BaseModel):
    """A run, without its steps."""

    id: str = Field(description="the run's id (a UUID)")
    automationId: str
    automationName: str
    automationVersion: int = Field(description="the number of the automation's version it ran")
    status: SeedRunStatus = Field(description="the document's status (`waiting` shows `running`)")
    conveyorStatus: str = Field(description="Conveyor's exact status (one more: `waiting`)")
    triggerType: str = Field(description="how it was started (`manual`, `event`, `retry`...)")
    replayOf: str | None = Field(description="the run this one replays or retries")
    dryRun: bool
    error: dict[str, Any] | None = Field(description=_ERROR)
    createdAt: str
    startedAt: str | None
    completedAt: str | None
    updatedAt: str
    durationSeconds: float | None


class SeedStep(BaseModel):
    """One started or settled step of a run, with its result."""

    id: str
    key: str = Field(description="the step's key in the definition")
    name: str | None
    type: str
    status: SeedStepStatus = Field(description="the document's status")
    conveyorStatus: str = Field(description="Conveyor's exact status")
    output: Any = Field(description="its output; null when over the inline limit")
    outputTruncated: bool
    outputSize: int = Field(description="the output's size in bytes of JSON")
    error: dict[str, Any] | None = Field(description=_ERROR)
    skipReason: str | None
    reusedFrom: str | None = Field(description="the run whose result a replay reused")
    attempts: int = Field(description="how many times it was attempted")
    startedAt: str | None
    completedAt: str | None
    durationSeconds: float | None


class SeedRunDetail(SeedRun):
    """A run with its trigger payload and per-step results."""

    triggerPayload: Any = Field(description="the payload it was triggered with")
    triggerEvent: dict[str, Any] = Field(description="the whole trigger event")
    timeoutAt: str | None
    replayedBy: list[str] = Field(description="ids of the runs that replay or retry this one")
    steps: list[SeedStep] = Field(description="the steps started or settled, in definition order")
    pendingStepKeys: list[str] = Field(description="keys of the steps not started yet")


class SeedPagination(BaseModel):
    """Where a page is in the whole list."""

    total: int = Field(description="matching runs (a lower bound when `totalExact` is false)")
    totalExact: bool
    limit: int
    offset: int
    hasMore: bool
    nextCursor: str | None = Field(description="`cursor` for the next page")


class SeedRunPage(BaseModel):
    """A page of runs, newest first."""

    runs: list[SeedRun]
    pagination: SeedPagination


class ErrorBody(BaseModel):
    """Sovrium's error object (the document gives none: this is Conveyor's choice)."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(description="a stable code, e.g. `run_not_found`")
    message: str
    status: int = Field(description="the HTTP status")
    details: list[dict[str, Any]] | None = Field(
        None, description="with a 422: `{field, message, type}` per problem"
    )


class ErrorResponse(BaseModel):
    """Every error answer."""

    error: ErrorBody
