"""Message wire schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """An email or push notification a send step delivered (or tried to)."""

    model_config = ConfigDict(extra="allow")  # `subject` for emails, `title` for pushes

    id: str
    channel: Literal["email", "push"]
    status: Literal["sending", "sent", "failed"]
    last_event: str = Field(description="`sending`, `send` or `failed`")
    run_id: str | None
    automation_step_key: str | None
    template_id: str | None
    template_name: str | None
    template_version: int | None
    template_version_id: str | None
    contact_id: str | None
    recipient: str = Field(description="the email address, or the push target")
    provider: str = Field(description="`smtp`, `outbox`, `webhook` or `apprise`")
    provider_message_id: str | None
    idempotency_key: str = Field(
        description="sent as the SMTP `Message-ID` (`<key>`) or the HTTP `Idempotency-Key`"
    )
    error: dict[str, Any] | None
    created_at: str
    sent_at: str | None
    updated_at: str


class MessageDetail(Message):
    """A message with its rendered content."""

    content: dict[str, Any] = Field(
        description="email: `from`, `to`, `subject`, `text`, `html`; "
        "push: `to`, `title`, `body`, `data`"
    )
