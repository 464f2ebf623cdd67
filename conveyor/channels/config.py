"""Channel configuration: the environment's defaults, overridden per tenant.

A tenant's overrides are stored as two JSON objects (``email`` and ``push``) in
``channel_settings``; a key that is absent there falls back to the
``CONVEYOR_*`` setting of the same meaning. The SMTP password is a secret:
it is stored (the database is trusted with it like with everything else) but
never returned by the API, which only says whether one is set.

**Trust.** The operator's endpoints (``CONVEYOR_SMTP_HOST`` with
``CONVEYOR_SMTP_PORT``, ``CONVEYOR_PUSH_WEBHOOK_URL``) are trusted: the egress
policy does not check them. A tenant's are checked; a tenant that overrides
only the SMTP port makes the pair its own, so it is checked too (the
operator's host is not a way to reach its other ports).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from conveyor.settings import Settings
from conveyor.store import channel_settings as store

# Override keys of each channel, and the setting each falls back to.
EMAIL_KEYS: dict[str, str] = {
    "provider": "email_provider",
    "from": "email_from",
    "smtp_host": "smtp_host",
    "smtp_port": "smtp_port",
    "smtp_username": "smtp_username",
    "smtp_password": "smtp_password",
    "smtp_starttls": "smtp_starttls",
}
PUSH_KEYS: dict[str, str] = {
    "provider": "push_provider",
    "webhook_url": "push_webhook_url",
}
SECRET_KEYS = frozenset({"smtp_password"})


@dataclass(frozen=True)
class EmailConfig:
    """How a tenant's emails leave."""

    provider: str  # outbox | smtp
    sender: str
    smtp_host: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    smtp_starttls: bool
    smtp_trusted: bool = False  # host and port are the operator's (not checked)

    def problem(self) -> str | None:
        """Why this configuration cannot send, or None."""
        if self.provider == "smtp" and not self.smtp_host:
            return "the smtp email provider needs `smtp_host` (CONVEYOR_SMTP_HOST)"
        return None


@dataclass(frozen=True)
class PushConfig:
    """How a tenant's push notifications leave."""

    provider: str  # outbox | webhook | apprise
    webhook_url: str | None
    webhook_trusted: bool = False  # the URL is the operator's (not checked)

    def problem(self) -> str | None:
        """Why this configuration cannot send, or None."""
        if self.provider == "webhook" and not self.webhook_url:
            return "the webhook push provider needs `webhook_url` (CONVEYOR_PUSH_WEBHOOK_URL)"
        return None


@dataclass(frozen=True)
class ChannelConfig:
    """Both channels of one tenant, effective (defaults with the overrides applied)."""

    email: EmailConfig
    push: PushConfig
    overrides: Mapping[str, Mapping[str, Any]]


def _default(settings: Settings, name: str) -> Any:
    value = getattr(settings, name)
    if name == "smtp_password" and value is not None:
        return value.get_secret_value()
    return value


def _merged(
    settings: Settings, keys: Mapping[str, str], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        key: overrides[key] if key in overrides else _default(settings, setting)
        for key, setting in keys.items()
    }


def effective(
    settings: Settings, email: Mapping[str, Any], push: Mapping[str, Any]
) -> ChannelConfig:
    """The configuration in force given the settings and a tenant's overrides."""
    e = _merged(settings, EMAIL_KEYS, email)
    p = _merged(settings, PUSH_KEYS, push)
    return ChannelConfig(
        email=EmailConfig(
            provider=e["provider"],
            sender=e["from"],
            smtp_host=e["smtp_host"],
            smtp_port=int(e["smtp_port"]),
            smtp_username=e["smtp_username"],
            smtp_password=e["smtp_password"],
            smtp_starttls=bool(e["smtp_starttls"]),
            smtp_trusted="smtp_host" not in email and "smtp_port" not in email,
        ),
        push=PushConfig(
            provider=p["provider"],
            webhook_url=p["webhook_url"],
            webhook_trusted="webhook_url" not in push,
        ),
        overrides={"email": dict(email), "push": dict(push)},
    )


def load(conn: Connection, tenant_id: str, settings: Settings) -> ChannelConfig:
    """The tenant's effective channel configuration."""
    row = store.get_overrides(conn, tenant_id)
    if row is None:
        return effective(settings, {}, {})
    return effective(settings, row["email"] or {}, row["push"] or {})
