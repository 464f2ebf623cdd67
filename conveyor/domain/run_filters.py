"""The run list filters, shared by run lists, live streams and bulk operations."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.status import RunStatus

TRIGGER_TYPES = (
    "manual",
    "event",
    "schedule",
    "automation_failure",
    "retry",
    "automation",
    "dry_run",
)
# Every value a run can carry (`retry` is kept for the clients that filtered on it).
TRIGGER_SOURCE_TYPES = (
    "user",
    "api_key",
    "event",
    "schedule",
    "automation",
    "bulk_operation",
    "dry_run",
    "retry",
)


class RunFilters(BaseModel):
    """Which runs a list, a stream or a bulk operation covers. Empty matches all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: tuple[RunStatus, ...] = ()
    automation_id: str | None = None
    automation_name: str | None = None
    trigger_type: str | None = None
    trigger_source_type: str | None = None
    contact_id: str | None = None
    identity: str | None = Field(None, description="the resolved identity's value")
    concurrency_key: str | None = None
    retry_of: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    dry_run: bool = False
