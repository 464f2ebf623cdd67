"""A run's detail (`GET /runs/{id}`): the summary plus its trigger, steps, waits and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.schemas.run_lists import RunSummary, StepView


class TriggerEvent(BaseModel):
    """The event that started the run (a manual trigger's payload is an event without a name).

    Kept as it was recorded: a trigger kind may add fields of its own.
    """

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(None, description="the event's id (the client's own); null if manual")
    name: str | None = Field(None, description="the event's name; null for a manual trigger")
    occurred_at: datetime | None = Field(None, description="when it happened (RFC 3339, UTC)")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="its payload, as the steps see it (`trigger.payload`)"
    )
    identity: dict[str, Any] | None = Field(
        None, description="`{type, value}` of the contact it is about, if it named one"
    )


class ResumingEvent(BaseModel):
    """The event that resumed a wait."""

    id: str = Field(description="the event's id")
    event_name: str | None = Field(description="its name")
    occurred_at: datetime | None = Field(description="when it happened (RFC 3339, UTC)")


class WaitView(BaseModel):
    """A `wait_for_event` step's wait: what it waits for and how it ended."""

    id: str = Field(description="the wait's id (a UUID)")
    step_id: str | None = Field(description="the step run that waits")
    step_key: str = Field(description="that step's key")
    step_type: str = Field(description="always `wait_for_event`")
    waiting_for_event_name: str = Field(description="the event name it waits for")
    status: str = Field(description="`waiting`, `resumed`, `timed_out` or `cancelled`")
    resolved_identity_value: str | None = Field(
        description="the identity value an event must carry to match (from the run's contact)"
    )
    contact_id: str | None = Field(description="the contact it waits on, if any")
    match: str | None = Field(description="the extra match expression, if the step has one")
    started_at: datetime | None = Field(description="when the wait began")
    timeout_at: datetime | None = Field(description="when it times out; null: never")
    resumed_at: datetime | None = Field(description="when a matching event resumed it")
    timed_out_at: datetime | None = Field(description="when it timed out")
    outcome_branch: str | None = Field(
        description="the branch the step took: `received` or `timeout`; null while waiting"
    )
    resumed_by_event: ResumingEvent | None = Field(description="the event that resumed it")


class MessageLink(BaseModel):
    """An email or push notification a step sent (or tried to), as the run shows it."""

    id: str = Field(description="the message's id (a UUID): `GET /api/v1/messages/{id}`")
    run_id: str = Field(description="the run that sent it (an earlier one, when reused)")
    channel: str = Field(description="`email` or `push`")
    status: str = Field(description="`queued`, `sent` or `failed`")
    last_event: str | None = Field(description="the provider's last report on it, if any")
    automation_step_key: str | None = Field(description="the step that sent it")
    template_id: str | None = Field(description="the template it was rendered from")
    template_version_id: str | None = Field(description="that template's version")
    contact_id: str | None = Field(description="the contact it went to")
    recipient: str | None = Field(description="the address or push target it went to")
    provider: str | None = Field(description="the provider that took it (`smtp`, `outbox`, ...)")
    error: dict[str, Any] | None = Field(description="why it failed: `code` and `message`")
    created_at: datetime = Field(description="when it was made (RFC 3339, UTC)")
    sent_at: datetime | None = Field(description="when the provider accepted it")
    subject: str | None = Field(None, description="an email's rendered subject")
    title: str | None = Field(None, description="a push notification's rendered title")


class RunStepDetail(StepView):
    """A step of a run's detail: the step with its waits and the messages it sent."""

    waits: list[WaitView] | None = Field(
        None, description="a `wait_for_event` step's waits; absent for other types"
    )
    linked_emails: list[MessageLink] | None = Field(
        None, description="the emails it sent; absent for steps that send none"
    )
    linked_push_notifications: list[MessageLink] | None = Field(
        None, description="the push notifications it sent; absent for steps that send none"
    )


class RunDetail(RunSummary):
    """One run with everything it recorded: trigger event, steps and attempts, waits, messages."""

    trigger_event: TriggerEvent = Field(description="the event (or manual call) that started it")
    retried_by: list[str] = Field(description="ids of the runs that retry or replay this one")
    timeout_at: datetime | None = Field(description="when the run times out; null: never")
    last_error: dict[str, Any] | None = Field(
        description="the error it ended with (`code`, `message`), as `error`"
    )
    steps: list[RunStepDetail] = Field(description="its steps, in definition order")
    waits: list[WaitView] = Field(description="every wait of its steps")
    sent_emails: list[MessageLink] = Field(description="the emails its steps sent")
    sent_push_notifications: list[MessageLink] = Field(
        description="the push notifications its steps sent"
    )
