"""Wire schemas of run control: cancel, retry, replay, bulk operations."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from conveyor.api.run_filters import Time
from conveyor.domain.run_filters import PayloadMatch, RunFilters
from conveyor.domain.status import RunStatus

_REASON = "why, for people: written into the run's history (and the new run's, on a retry)"


class CancelRequest(BaseModel):
    """Why the run is cancelled (written into its history)."""

    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(
        None, max_length=1000, description="why, for people: written into the run's history"
    )


class RetryRequest(BaseModel):
    """How to retry: always a new run linked by `retry_of`.

    A `from_step` retry needs `step_key`, naming a step of the version retried;
    `payload` is only for `full`: otherwise 422 `invalid_retry`. A new
    `payload` or `version: latest` also needs the scope `automations:trigger`
    (403 without it).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["from_failed", "from_step", "full"] = Field(
        "from_failed",
        description="from_failed: reuse completed steps, resume at the failed ones; "
        "from_step: re-run `step_key` and everything downstream; full: run everything again",
    )
    step_key: str | None = Field(
        None, description="the step to re-run from: required with from_step, and only with it"
    )
    payload: dict[str, Any] | None = Field(
        None,
        description="a new trigger payload (full only); null or left out: the original run's",
    )
    version: Literal["original", "latest"] = Field(
        "original", description="the run's own definition version, or the current one"
    )
    resend: StrictBool = Field(
        False,
        description="true: send steps send their messages again under new idempotency keys, even "
        "those already delivered in the lineage; false: they reuse every message already sent",
    )
    reason: str | None = Field(None, max_length=1000, description=_REASON)


class ReplayRequest(BaseModel):
    """A replay is a retry `from_failed`."""

    model_config = ConfigDict(extra="forbid")
    resend: StrictBool = Field(
        False, description="send again the messages already delivered in the lineage (see retry)"
    )
    reason: str | None = Field(None, max_length=1000, description=_REASON)


class BulkFilters(BaseModel):
    """The run list filters (as in `GET /runs`), in a request body; all given must hold.

    An id that is not a UUID, or a trigger type that does not exist, matches no run.
    """

    model_config = ConfigDict(extra="forbid")

    status: list[RunStatus] = Field(
        default_factory=list,
        description="any of these statuses, of those the operation acts on (cancel: pending, "
        "running, waiting; replay: failed, exhausted, timed-out, cancelled, "
        "completed-with-errors); empty: all of those",
    )
    automation_id: str | None = Field(None, description="runs of this automation (its id)")
    automation_name: str | None = Field(None, description="runs of the automation of this name")
    trigger_type: str | None = Field(
        None,
        description="`manual`, `event`, `schedule`, `automation_failure` or `retry`",
    )
    trigger_source_type: str | None = Field(
        None,
        description="`user`, `api_key`, `event`, `schedule`, `automation` or `retry`",
    )
    contact_id: str | None = Field(None, description="runs about this contact (its id)")
    identity: str | None = Field(
        None, description="runs whose trigger's identity has this value (`ada@example.com`)"
    )
    concurrency_key: str | None = Field(None, description="runs with this concurrency key")
    retry_of: str | None = Field(None, description="retries and replays of this run (its id)")
    tag: str | None = Field(None, description="runs of automations carrying this tag")
    created_after: Time | None = Field(
        None, description="runs created at or after this time (with a time zone)"
    )
    created_before: Time | None = Field(
        None,
        description="runs created before this time (with a time zone); never later than the "
        "request itself",
    )
    payload: PayloadMatch | None = Field(
        None,
        description="runs whose trigger payload holds `value` at `path` (as "
        "`payload.<path>=<value>` in `GET /runs`); on SQLite it needs `created_after`",
    )

    def to_filters(self) -> RunFilters:
        """The domain filter object."""
        data = self.model_dump()
        data["status"] = tuple(self.status)
        return RunFilters(**data)


class BulkRequest(BaseModel):
    """A bulk cancel or replay over the runs the filters match."""

    model_config = ConfigDict(extra="forbid")
    filters: BulkFilters = Field(
        default_factory=BulkFilters,
        description="which runs; left out: every run of the tenant the operation can act on",
    )
    reason: str | None = Field(
        None, max_length=1000, description="why, for people: written into each run's history"
    )
    resend: StrictBool = Field(False, description="replay only: as `resend` of a retry")


class BulkOperation(BaseModel):
    """A bulk operation and its progress."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="the operation's id (a UUID)")
    kind: Literal["cancel", "replay"] = Field(description="what it does to each run")
    status: Literal["queued", "running", "completed", "failed"] = Field(
        description="queued until a worker takes it; running while pages remain; then completed"
    )
    matched: int = Field(description="runs found so far")
    done: int = Field(description="runs cancelled or replayed so far")
    failed: int = Field(
        description="runs that could not be handled (one that finished in between, say)"
    )
    errors: list[dict[str, Any]] = Field(
        description="the first 50 failures, each `{run_id, code, detail}`"
    )
    filters: dict[str, Any] = Field(
        description="the filters as narrowed when the operation was created: only the statuses "
        "it acts on, and `created_before` at most the time of the request"
    )
    arguments: dict[str, Any] = Field(description="`reason` and `resend` as requested")
    created_by: str | None = Field(description="the label of the key that asked, else its id")
    created_at: str = Field(description="when it was requested (RFC 3339, UTC)")
    updated_at: str = Field(description="when its progress last moved (RFC 3339, UTC)")
    completed_at: str | None = Field(description="when it finished; null until then")
