"""What every provider receives and returns, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ChannelError(Exception):
    """A provider could not deliver; ``retryable`` says whether a later attempt may."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retryable: bool,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The error as stored on the message row."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered email to one recipient.

    ``idempotency_key`` becomes the ``Message-ID`` header (``<key>``), so a
    receiving server that de-duplicates on it drops a repeat.
    """

    to: str
    sender: str
    subject: str
    text: str | None
    html: str | None
    idempotency_key: str


@dataclass(frozen=True)
class OutgoingPush:
    """One rendered push notification to one target (a device token or an Apprise URL)."""

    to: str
    title: str | None
    body: str
    data: dict[str, Any]
    idempotency_key: str
    message_id: str  # our message row, sent along so the receiver can refer to it
    meta: dict[str, Any] = field(default_factory=dict)  # run_id, step_key, contact_id


@dataclass(frozen=True)
class Delivery:
    """A provider's acceptance: its own id for the message, when it gives one."""

    provider_message_id: str | None = None
