"""Channel settings wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from conveyor.domain.senders import sender_address
from conveyor.domain.wire_types import Port

# The schema states the prefix `_url` checks (its message is kept, so the check stays there).
WebhookUrl = Annotated[str, Field(max_length=2000, json_schema_extra={"pattern": "^https?://"})]


class EmailSettingsPut(BaseModel):
    """Email overrides; a field left out (or null) uses the server's `CONVEYOR_*` default.

    The SMTP server is one unit: setting any of `smtp_host`, `smtp_port`,
    `smtp_starttls`, `smtp_username`, `smtp_password` makes the whole server the
    tenant's, and then `smtp_host` is required and `smtp_username` and
    `smtp_password` go together (else 422 `validation_error`, `errors[].type`
    `incomplete_channel`). AUTH without STARTTLS to the tenant's server is
    refused (`plaintext_auth`) unless the operator allows it.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: Literal["outbox", "smtp"] | None = Field(
        None,
        description="`smtp` delivers; `outbox` only stores the message (listed by "
        "`GET /messages`); null: the server's `CONVEYOR_EMAIL_PROVIDER`",
    )
    from_: str | None = Field(
        None,
        alias="from",
        max_length=500,
        examples=["Shop <shop@x.io>"],
        description="the sender: one email address, optionally with a display name; null: the "
        "server's `CONVEYOR_EMAIL_FROM`. Through the server's relay its domain must be one "
        "the operator allows the tenant (422 `sender_not_allowed` otherwise)",
    )
    smtp_host: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="the tenant's own SMTP server (a host name or address); a literal "
        "private address, a `localhost` name or a host the server denies is a 422 "
        "`egress_denied`",
    )
    smtp_port: Port | None = Field(
        None, description="the SMTP server's port (1 to 65535); default 587 on a tenant's server"
    )
    smtp_username: str | None = Field(
        None,
        max_length=500,
        description="the AUTH user name on the tenant's server; given with `smtp_password`",
    )
    smtp_password: str | None = Field(
        None,
        max_length=1000,
        description="write-only; left out: the stored one is kept while host, port and "
        "STARTTLS stay the same; null: removed. Stored sealed: needs the server's secret key "
        "(422 `secret_key_missing` without one)",
    )
    smtp_starttls: StrictBool | None = Field(
        None, description="upgrade the connection with STARTTLS; default true on a tenant's server"
    )

    @field_validator("from_")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and sender_address(value) is None:
            # Typed apart: a mailbox's syntax (RFC 5322, a name and `<address>`
            # or a bare address) is more than a pattern can state.
            raise PydanticCustomError(
                "invalid_mailbox", "`from` must be one email address, optionally with a name"
            )
        return value


class PushSettingsPut(BaseModel):
    """Push overrides; a field left out (or null) uses the server's `CONVEYOR_*` default."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["outbox", "webhook", "apprise"] | None = Field(
        None,
        description="`webhook` POSTs each notification to `webhook_url`; `apprise` treats each "
        "push target as an Apprise URL (422 `validation_error`, `errors[].type` "
        "`apprise_unavailable`, when the server allows no Apprise scheme); `outbox` only "
        "stores it; null: the server's `CONVEYOR_PUSH_PROVIDER`",
    )
    webhook_url: WebhookUrl | None = Field(
        None,
        description="write-only; `http://` or `https://`; left out: the stored one is kept; "
        "null: removed. Required with the `webhook` provider unless the server has "
        "`CONVEYOR_PUSH_WEBHOOK_URL`. A literal private address, a `localhost` name or a denied "
        "host is a 422 `egress_denied`; stored sealed (422 `secret_key_missing` without the "
        "server's secret key)",
    )

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("`webhook_url` must start with http:// or https://")
        return value


class ChannelSettingsPut(BaseModel):
    """The tenant's overrides, replacing the ones stored (secrets left out are kept)."""

    model_config = ConfigDict(extra="forbid")

    email: EmailSettingsPut = Field(
        default_factory=EmailSettingsPut, description="how emails leave (left out: no overrides)"
    )
    push: PushSettingsPut = Field(
        default_factory=PushSettingsPut,
        description="how push notifications leave (left out: no overrides)",
    )


class EmailSettings(BaseModel):
    """The tenant's own email settings; null: the server's default is in use."""

    model_config = ConfigDict(populate_by_name=True)

    provider: str | None = Field(description="`smtp` or `outbox`")
    from_: str | None = Field(alias="from", description="the sender address, with its name")
    smtp_host: str | None = Field(description="the tenant's SMTP server")
    smtp_port: int | None = Field(description="its port")
    smtp_username: str | None = Field(description="the AUTH user name")
    smtp_password_set: bool = Field(description="whether a password is set (it is never shown)")
    smtp_starttls: bool | None = Field(description="whether STARTTLS is used")


class PushSettings(BaseModel):
    """The tenant's own push settings; null: the server's default is in use."""

    provider: str | None = Field(description="`webhook`, `apprise` or `outbox`")
    webhook_url_set: bool = Field(description="whether a webhook URL is set (it is never shown)")


class FieldLists(BaseModel):
    """Field names, per channel."""

    email: list[str] = Field(description="fields of `email`, such as `from` or `smtp_host`")
    push: list[str] = Field(description="fields of `push`: `provider`, `webhook_url`")


class ChannelSettings(BaseModel):
    """The tenant's channel settings: its own values; the server's defaults are not shown."""

    email: EmailSettings = Field(description="the tenant's email settings")
    push: PushSettings = Field(description="the tenant's push settings")
    defaults: FieldLists = Field(
        description="the fields where the server's default is in use (what it is is not shown)"
    )
    overridden: FieldLists = Field(description="the fields the tenant sets itself")
    updated_at: datetime | None = Field(
        description="when the tenant last changed them (null: never)"
    )
