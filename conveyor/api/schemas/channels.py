"""Channel settings wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.domain.senders import sender_address


class EmailSettingsPut(BaseModel):
    """Email overrides; a field left out (or null) uses the server's `CONVEYOR_*` default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: Literal["outbox", "smtp"] | None = None
    from_: str | None = Field(None, alias="from", max_length=500, examples=["Shop <shop@x.io>"])
    smtp_host: str | None = Field(None, min_length=1, max_length=255)
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_username: str | None = Field(None, max_length=500)
    smtp_password: str | None = Field(
        None,
        max_length=1000,
        description="write-only; left out: the stored one is kept while host, port and "
        "STARTTLS stay the same; null: removed",
    )
    smtp_starttls: bool | None = None

    @field_validator("from_")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and sender_address(value) is None:
            raise ValueError("`from` must be one email address, optionally with a name")
        return value


class PushSettingsPut(BaseModel):
    """Push overrides; a field left out (or null) uses the server's `CONVEYOR_*` default."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["outbox", "webhook", "apprise"] | None = None
    webhook_url: str | None = Field(
        None,
        max_length=2000,
        description="write-only; left out: the stored one is kept; null: removed",
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

    email: EmailSettingsPut = Field(default_factory=EmailSettingsPut)
    push: PushSettingsPut = Field(default_factory=PushSettingsPut)


class EmailSettings(BaseModel):
    """The tenant's own email settings; null: the server's default is in use."""

    model_config = ConfigDict(populate_by_name=True)

    provider: str | None
    from_: str | None = Field(alias="from")
    smtp_host: str | None
    smtp_port: int | None
    smtp_username: str | None
    smtp_password_set: bool = Field(description="whether a password is set (it is never shown)")
    smtp_starttls: bool | None


class PushSettings(BaseModel):
    """The tenant's own push settings; null: the server's default is in use."""

    provider: str | None
    webhook_url_set: bool = Field(description="whether a webhook URL is set (it is never shown)")


class FieldLists(BaseModel):
    """Field names, per channel."""

    email: list[str]
    push: list[str]


class ChannelSettings(BaseModel):
    """The tenant's channel settings: its own values; the server's defaults are not shown."""

    email: EmailSettings
    push: PushSettings
    defaults: FieldLists = Field(
        description="the fields where the server's default is in use (what it is is not shown)"
    )
    overridden: FieldLists = Field(description="the fields the tenant sets itself")
    updated_at: datetime | None = Field(description="when the tenant last changed them")
