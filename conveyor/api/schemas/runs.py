"""Run wire schemas."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from conveyor.domain.wire_types import PositiveInteger


class Identity(BaseModel):
    """How a trigger or an event names the contact it is about.

    The value must fit its type, else 422 `invalid_identity` (for an event: the
    item is rejected with that code): an email address (at most 320
    characters), an external id (at most 255), or a contact's id (a UUID of an
    existing contact of the tenant, else `unknown_contact`).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["email", "external_id", "contact_id"] = Field(
        description="email and external_id find the contact, or create it on first sight; "
        "contact_id names an existing one"
    )
    value: str = Field(
        min_length=1,
        max_length=500,
        description="the email (trimmed and lowercased), the external id (exactly), or the "
        "contact's id",
    )


class TriggerRequest(BaseModel):
    """Start a run of the automation's current version."""

    # Unknown fields are refused rather than ignored: a client sending
    # `dry_run: true` to a server without dry runs must not start a real run.
    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="the trigger event's payload (`trigger.payload`), nested at most 63 levels; "
        "in a dry run of a manual trigger, the simulated runs' payload",
    )
    identity: Identity | None = Field(
        None, description="the contact the run is about (not with `dry_run`)"
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="a repeat with the same key returns the first run instead of starting "
        "another, for as long as that run exists; must equal the `Idempotency-Key` header when "
        "both are given (not with `dry_run`)",
    )
    # Dry runs (docs/concepts.md, "Dry runs"): simulate instead of starting a run.
    dry_run: StrictBool = Field(
        False,
        description="simulate the automation over a date range; 202 with the dry run. The "
        "dry-run fields below are refused without it",
    )
    start_date: date | None = Field(
        None,
        description="dry run: first day simulated (YYYY-MM-DD), local to `timezone`; "
        "default `end_date`, or today when both are absent",
    )
    end_date: date | None = Field(
        None,
        description="dry run: last day simulated, inclusive, not before `start_date`; "
        "default `start_date`, or today when both are absent; the range spans at most "
        "`CONVEYOR_DRY_RUN_MAX_DAYS` days (366 by default), else 422 `invalid_dry_run`",
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="dry run: the IANA time zone the days are local to (`Europe/Paris`), "
        "which also says what 'today' is; default the schedule trigger's, else UTC; an "
        "unknown zone is a 422 `invalid_dry_run`",
    )
    profile_ids: list[str] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="dry run: the ids of the contacts to simulate, each an existing contact "
        "(else 422 `invalid_dry_run`); required for manual triggers",
    )
    version: PositiveInteger | None = Field(
        None,
        description="dry run: the version number to simulate (an existing one, else 422 "
        "`invalid_dry_run`); default the current one",
    )
