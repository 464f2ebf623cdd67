"""Message wire schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """An email or push notification a send step delivered (or tried to), to one recipient.

    Emails also carry `subject`, pushes `title` (the rendered one).
    """

    model_config = ConfigDict(extra="allow")  # `subject` for emails, `title` for pushes

    id: str = Field(description="the message's id (a UUID)")
    channel: Literal["email", "push"] = Field(description="how it was sent")
    status: Literal["sending", "sent", "failed"] = Field(
        description="sending: written before the provider was called, outcome not known yet "
        "(or the worker died during the call); sent: the provider took it (with `outbox`: "
        "stored); failed: see `error`"
    )
    last_event: str = Field(description="`sending`, `send` or `failed`")
    run_id: str | None = Field(description="the run whose step sent it")
    automation_step_key: str | None = Field(description="the key of the step that sent it")
    template_id: str | None = Field(description="the template rendered")
    template_name: str | None = Field(
        description="that template's name (also when the template was deleted since)"
    )
    template_version: int | None = Field(description="the number of the template version used")
    template_version_id: str | None = Field(description="the id of the template version used")
    contact_id: str | None = Field(
        description="the run's contact; null without one, or once the contact is deleted"
    )
    recipient: str = Field(
        description="the email address, or the push target (an Apprise URL masked)"
    )
    provider: str = Field(description="`smtp`, `outbox`, `webhook` or `apprise`")
    provider_message_id: str | None = Field(
        description="the provider's own id, when it gives one (SMTP: the `Message-ID`; a "
        "webhook: the `id` of its JSON answer)"
    )
    idempotency_key: str = Field(
        description="sent as the SMTP `Message-ID` (`<key>`) or the HTTP `Idempotency-Key`"
    )
    error: dict[str, Any] | None = Field(description="why it failed (`code`, `message`), else null")
    created_at: str = Field(description="when the message was written (RFC 3339, UTC)")
    sent_at: str | None = Field(description="when the provider took it; null unless sent")
    updated_at: str = Field(description="when its status last changed (RFC 3339, UTC)")


class MessageDetail(Message):
    """A message with its rendered content."""

    content: dict[str, Any] = Field(
        description="email: `from`, `to`, `subject`, `text`, `html`; "
        "push: `to`, `title`, `body`, `data`"
    )
