"""Wire schemas of run control: cancel, retry, replay, bulk operations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from conveyor.domain.run_filters import RunFilters
from conveyor.domain.status import RunStatus


class CancelRequest(BaseModel):
    """Why the run is cancelled (written into its history)."""

    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000)


class RetryRequest(BaseModel):
    """How to retry: always a new run linked by `retry_of`."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["from_failed", "from_step", "full"] = Field(
        "from_failed",
        description="from_failed: reuse completed steps, resume at the failed ones; "
        "from_step: re-run `step_key` and everything downstream; full: run everything again",
    )
    step_key: str | None = Field(None, description="required with from_step")
    payload: dict[str, Any] | None = Field(None, description="a new payload (full only)")
    version: Literal["original", "latest"] = Field(
        "original", description="the run's own definition version, or the current one"
    )
    resend: bool = Field(False, description="re-send messages already delivered in the lineage")
    reason: str | None = Field(None, max_length=1000)


class ReplayRequest(BaseModel):
    """A replay is a retry `from_failed`."""

    model_config = ConfigDict(extra="forbid")
    resend: bool = False
    reason: str | None = Field(None, max_length=1000)


class BulkFilters(BaseModel):
    """The run list filters (as in `GET /runs`), in a request body."""

    model_config = ConfigDict(extra="forbid")

    status: list[RunStatus] = Field(default_factory=list)
    automation_id: str | None = None
    automation_name: str | None = None
    trigger_type: str | None = None
    trigger_source_type: str | None = None
    contact_id: str | None = None
    identity: str | None = None
    concurrency_key: str | None = None
    retry_of: str | None = None
    tag: str | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None

    def to_filters(self) -> RunFilters:
        """The domain filter object."""
        data = self.model_dump()
        data["status"] = tuple(self.status)
        return RunFilters(**data)


class BulkRequest(BaseModel):
    """A bulk cancel or replay over the runs the filters match."""

    model_config = ConfigDict(extra="forbid")
    filters: BulkFilters = Field(default_factory=BulkFilters)
    reason: str | None = Field(None, max_length=1000)
    resend: bool = Field(False, description="replay only")


class BulkOperation(BaseModel):
    """A bulk operation and its progress."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: Literal["cancel", "replay"]
    status: Literal["queued", "running", "completed", "failed"]
    matched: int
    done: int
    failed: int
    errors: list[dict[str, Any]]
