"""Seed 001 (Sendrealm): its names for Conveyor's run views, and its wire schemas.

Pure renaming of what ``conveyor.services.runs`` returns: the run detail
already has seed 001's waits and linked messages; the run, its trigger event
and its steps name a few fields otherwise (mapped in docs/seeds/001.md).
Every field Conveyor adds stays, under its own name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.schemas.run_detail import MessageLink, WaitView


def _identity(run: Mapping[str, Any]) -> dict[str, Any]:
    identity = run.get("identity")
    if not isinstance(identity, Mapping):
        return {"resolved_identity_type": None, "resolved_identity_value": None}
    return {
        "resolved_identity_type": identity.get("type"),
        "resolved_identity_value": identity.get("value"),
    }


def run_item(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run summary under seed 001's names (``identity`` as ``resolved_identity_*``)."""
    rest = {k: v for k, v in summary.items() if k not in ("id", "automation_id", "identity")}
    return {
        "id": summary["id"],
        "automation_id": summary["automation_id"],
        **_identity(summary),
        **rest,
    }


def trigger_event(event: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The trigger event with ``name`` as ``event_name``."""
    if event is None:
        return None
    rest = {k: v for k, v in event.items() if k not in ("id", "name", "payload", "occurred_at")}
    return {
        "id": event.get("id"),
        "event_name": event.get("name"),
        "payload": event.get("payload"),
        "occurred_at": event.get("occurred_at"),
        **rest,
    }


def step(view: Mapping[str, Any]) -> dict[str, Any]:
    """A step of the run detail with ``key``/``type`` as ``step_key``/``step_type``."""
    rest = {k: v for k, v in view.items() if k not in ("id", "key", "type")}
    return {"id": view["id"], "step_key": view["key"], "step_type": view["type"], **rest}


def run_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``get_run_detail``'s answer under seed 001's names (its ``data``, unwrapped)."""
    event = detail.get("trigger_event")
    out = run_item(detail)
    out["trigger_event_name"] = event.get("name") if isinstance(event, Mapping) else None
    out["trigger_event"] = trigger_event(event)
    out["steps"] = [step(s) for s in detail["steps"]]
    return out


# ---- wire schemas (documentation of /seeds/001/openapi.json) ----


class Seed001Error(BaseModel):
    """The error object: a stable `code`, a `message` for people, and `details`."""

    code: str = Field(
        description="stable: `unauthenticated`, `forbidden`, `not_found`, `run_not_found`, "
        "`automation_not_found`, `validation_error`, `rate_limited`..."
    )
    message: str = Field(description="what went wrong, for people")
    details: Any = Field(
        None,
        description="null, or for `validation_error` the list of `{loc, msg, type}` "
        "(`type` `unknown_parameter` for a query parameter the operation does not take)",
    )


class Seed001ErrorBody(BaseModel):
    """Every error answer of seed 001's API."""

    status: int = Field(description="the HTTP status, repeated")
    error: Seed001Error


class Seed001TriggerEvent(BaseModel):
    """The event that started the run (a manual trigger's has no id and no name)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(description="the event's id; null for a manual trigger")
    event_name: str | None = Field(description="its name; null for a manual trigger")
    payload: dict[str, Any] | None = Field(description="its payload")
    occurred_at: str | None = Field(description="when it happened (RFC 3339, UTC)")


class Seed001RunItem(BaseModel):
    """A run in a list (no trigger event, no steps): Conveyor's run summary, renamed."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="the run's id (a UUID)")
    automation_id: str = Field(description="its automation's id (a UUID)")
    resolved_identity_type: str | None = Field(
        description="`email`, `external_id` or `contact_id`: how the run names its contact"
    )
    resolved_identity_value: str | None = Field(description="that identity's value")
    status: str = Field(description="`pending`, `running`, `waiting`, `completed`, ...")
    created_at: str = Field(description="when the run was made (RFC 3339, UTC)")


class Seed001Step(BaseModel):
    """A step of the run: Conveyor's step view with `step_key` and `step_type`."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="the step run's id")
    step_key: str = Field(description="the step's key in the definition")
    step_type: str = Field(description="its type (`send_email_template`, `wait_for_event`, ...)")
    status: str = Field(description="where the step is")
    branch_taken: str | None = Field(description="the branch it took, if any")
    waits: list[WaitView] | None = Field(None, description="a `wait_for_event` step's waits")
    linked_emails: list[MessageLink] | None = Field(None, description="the emails it sent")
    linked_push_notifications: list[MessageLink] | None = Field(
        None, description="the push notifications it sent"
    )


class Seed001RunDetail(Seed001RunItem):
    """One run: trigger event, identity, steps, waits (timeout path), messages, last error."""

    trigger_event_name: str | None = Field(description="the trigger event's name")
    trigger_event: Seed001TriggerEvent | None = Field(description="the trigger event")
    steps: list[Seed001Step] = Field(description="its steps, in definition order")
    waits: list[WaitView] = Field(description="every wait of its steps")
    sent_emails: list[MessageLink] = Field(description="the emails its steps sent")
    sent_push_notifications: list[MessageLink] = Field(
        description="the push notifications its steps sent"
    )
    last_error: dict[str, Any] | None = Field(description="the error it ended with")
    timeout_at: str | None = Field(description="when the run times out; null: never")


class Seed001RunPage(BaseModel):
    """A page of runs, newest first."""

    data: list[Seed001RunItem]
    meta: dict[str, Any] = Field(
        description="`total`, `total_exact`, `limit`, `offset`, `next_cursor` (as `/api/v1`)"
    )


class Seed001RunEnvelope(BaseModel):
    """One run, in the `data` envelope."""

    data: Seed001RunDetail
