"""Batch trigger wire schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.schemas.runs import Identity


class BatchTriggerItem(BaseModel):
    """One run to start: the fields of a single trigger that start a run."""

    # Unknown fields are refused (the item is rejected): `dry_run` has no batch form.
    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="the trigger event's payload (`trigger.payload`), nested at most 63 levels",
    )
    identity: Identity | None = Field(None, description="the contact the run is about")
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="the run's key: an item whose key names an existing run of the automation "
        "(or an earlier item's) starts nothing and gets that run back (`duplicate`)",
    )


class BatchTriggerRequest(BaseModel):
    """Up to 1,000 runs of one automation, each accepted or rejected on its own.

    The body size limit (`CONVEYOR_MAX_BODY_BYTES`, 1 MiB by default) applies to
    the whole batch (413). One request starts at most
    `CONVEYOR_MAX_RUNS_PER_REQUEST` runs (2,000 by default): the items past it
    are rejected (`too_many_runs`), to be sent again.
    """

    model_config = ConfigDict(extra="forbid")

    runs: list[BatchTriggerItem] = Field(
        min_length=1, max_length=1000, description="the runs, checked one by one"
    )


class BatchTriggerResult(BaseModel):
    """What became of one item of the request."""

    index: int = Field(description="the item's position in the request")
    status: Literal["accepted", "duplicate", "rejected"] = Field(
        description="accepted: its run was created; duplicate: its `idempotency_key` names a "
        "run already (or an earlier item's), nothing is started; rejected: nothing is started"
    )
    idempotency_key: str | None = Field(
        description="the item's `idempotency_key`, when it had a valid one"
    )
    run_id: str | None = Field(
        None, description="accepted: the new run; duplicate: the run its key names"
    )
    contact_id: str | None = Field(
        None, description="accepted: the contact its identity resolved to"
    )
    code: str | None = Field(
        None,
        description="rejected: why, as a stable code (`validation_error`, `invalid_identity`, "
        "`unknown_contact`, `malformed_json`, `invalid_concurrency_key`, `too_many_runs`...)",
    )
    reason: str | None = Field(None, description="rejected: why, for people")
    errors: list[dict[str, Any]] | None = Field(
        None, description="`validation_error`: each problem as `{loc, msg, type}`"
    )


class BatchTriggerOutcome(BaseModel):
    """The outcome of a batch trigger, item by item."""

    accepted: int = Field(description="how many runs were created")
    duplicates: int = Field(description="how many items named an existing run by their key")
    rejected: int = Field(description="how many items were refused")
    results: list[BatchTriggerResult] = Field(description="one result per item, in request order")
