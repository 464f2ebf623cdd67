"""Channel configuration: the operator's defaults, and a tenant's overrides, by units.

A tenant's overrides are stored as two JSON objects (``email`` and ``push``)
in ``channel_settings``. ``provider`` and ``from`` fall back one by one to
``CONVEYOR_EMAIL_PROVIDER`` and ``CONVEYOR_EMAIL_FROM``. The SMTP server is
**one unit**: host, port, STARTTLS, username and password. A tenant that sets
any of them has its own server, whole: its host (required), its port (587
unless given), STARTTLS (on unless turned off) and AUTH only with its own
username and password. Otherwise the operator's unit is used, whole. So the
operator's credentials only ever go to the operator's host, and the
operator's host is never reached on a port or with a TLS choice of a
tenant's. The push webhook is the tenant's ``webhook_url`` or the operator's.

**Trust.** The operator's endpoints are trusted: the egress policy does not
check them. A tenant's are checked, and AUTH to a tenant's server without
STARTTLS is refused unless ``CONVEYOR_SMTP_ALLOW_PLAINTEXT_AUTH``. On the
operator's relay a tenant's ``from`` must be in a domain the operator allows
it (``conveyor.domain.senders``).

**Secrets.** A tenant's SMTP password and webhook URL are stored sealed
(``conveyor.crypto``) by ``seal_given`` and opened by ``open_email`` /
``open_push`` just before a send; nothing else sees them in clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import Connection

from conveyor.crypto import Vault
from conveyor.domain.redact import OPERATOR_SMTP
from conveyor.domain.senders import SenderDomains
from conveyor.settings import Settings
from conveyor.store import channel_settings as store
from conveyor.store import tenants as tenant_store

SMTP_UNIT = ("smtp_host", "smtp_port", "smtp_starttls", "smtp_username", "smtp_password")
# Where the unit connects: a stored password is kept only while these stay the same.
SMTP_ENDPOINT = ("smtp_host", "smtp_port", "smtp_starttls")
EMAIL_KEYS = ("provider", "from", *SMTP_UNIT)
PUSH_KEYS = ("provider", "webhook_url")
# Write-only values, stored sealed: channel -> keys.
SECRETS: dict[str, tuple[str, ...]] = {"email": ("smtp_password",), "push": ("webhook_url",)}
# A tenant's own server, where it does not say otherwise.
TENANT_SMTP_PORT = 587
TENANT_SMTP_STARTTLS = True

Owner = Literal["operator", "tenant"]


def secret_context(tenant_id: str, channel: str, key: str) -> str:
    """What a channel secret is sealed to: its tenant and which setting it is."""
    return f"{tenant_id}:channel.{channel}.{key}"


@dataclass(frozen=True)
class EmailConfig:
    """How a tenant's emails leave. ``smtp_password`` is as stored (sealed) until opened."""

    provider: str  # outbox | smtp
    sender: str
    smtp_host: str | None
    smtp_port: int
    smtp_username: str | None
    smtp_password: str | None
    smtp_starttls: bool
    smtp_owner: Owner = "operator"
    sender_is_default: bool = True  # `from` is the operator's CONVEYOR_EMAIL_FROM
    from_domains: SenderDomains = field(default_factory=SenderDomains)
    allow_plaintext_auth: bool = False

    @property
    def smtp_trusted(self) -> bool:
        """The SMTP server is the operator's (not checked by the egress policy)."""
        return self.smtp_owner == "operator"

    @property
    def shown_server(self) -> str:
        """The SMTP server as texts name it: the tenant's ``host:port``, never the operator's."""
        if self.smtp_trusted:
            return OPERATOR_SMTP
        return f"{self.smtp_host}:{self.smtp_port}"

    def problem(self) -> str | None:
        """Why this configuration cannot send, or None.

        A tenant's own server must be whole whatever the provider: it is the
        tenant's either way, and half of one would be completed by nobody.
        """
        if not self.smtp_trusted:
            if not self.smtp_host:
                return (
                    "a tenant's own SMTP server needs `smtp_host` (the server's SMTP "
                    "settings are used whole or not at all)"
                )
            if bool(self.smtp_username) != bool(self.smtp_password):
                return "`smtp_username` and `smtp_password` go together (AUTH needs both)"
        elif self.provider == "smtp" and not self.smtp_host:
            return "the smtp email provider needs an SMTP server (CONVEYOR_SMTP_HOST)"
        return None

    def auth_problem(self) -> str | None:
        """Why AUTH must not be sent (in clear to a tenant's server), or None."""
        if (
            self.provider == "smtp"
            and not self.smtp_trusted
            and self.smtp_username
            and not self.smtp_starttls
            and not self.allow_plaintext_auth
        ):
            return (
                "AUTH without STARTTLS to a tenant's SMTP server is refused on this server "
                "(it would send the password in clear); turn `smtp_starttls` on"
            )
        return None

    def sender_problem(self) -> str | None:
        """Why ``from`` may not go through the operator's relay, or None."""
        if self.provider != "smtp" or not self.smtp_trusted or self.sender_is_default:
            return None
        if self.from_domains.allows(self.sender):
            return None
        allowed = ", ".join(self.from_domains.entries()) or "none"
        return (
            f"the sender {self.sender!r} is not allowed through this server's SMTP relay: "
            f"its domain must be one the operator allows this tenant (allowed: {allowed}); "
            "change `from`, or use your own SMTP server"
        )


@dataclass(frozen=True)
class PushConfig:
    """How a tenant's push notifications leave. ``webhook_url`` is as stored until opened."""

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
    """Both channels of one tenant, effective (the defaults with the overrides applied)."""

    email: EmailConfig
    push: PushConfig
    overrides: Mapping[str, Mapping[str, Any]]


def has_own_smtp(email: Mapping[str, Any]) -> bool:
    """Whether overrides make the SMTP unit the tenant's (it sets any part of it)."""
    return any(key in email for key in SMTP_UNIT)


def smtp_endpoint(email: Mapping[str, Any]) -> tuple[str | None, int, bool] | None:
    """Where a tenant's own SMTP unit connects (host, port, STARTTLS), or None if it has none."""
    if not has_own_smtp(email):
        return None
    host = email.get("smtp_host")
    return (
        host.strip().lower() if isinstance(host, str) else None,
        int(email.get("smtp_port", TENANT_SMTP_PORT)),
        bool(email.get("smtp_starttls", TENANT_SMTP_STARTTLS)),
    )


def _email(
    settings: Settings, email: Mapping[str, Any], from_domains: Sequence[str] | None
) -> EmailConfig:
    common: dict[str, Any] = {
        "provider": email.get("provider", settings.email_provider),
        "sender": email.get("from", settings.email_from),
        "sender_is_default": email.get("from", settings.email_from) == settings.email_from,
        "from_domains": SenderDomains.parse(
            settings.email_from_domains if from_domains is None else from_domains
        ),
        "allow_plaintext_auth": settings.smtp_allow_plaintext_auth,
    }
    endpoint = smtp_endpoint(email)
    if endpoint is not None:
        return EmailConfig(
            **common,
            smtp_host=email.get("smtp_host"),
            smtp_port=endpoint[1],
            smtp_username=email.get("smtp_username"),
            smtp_password=email.get("smtp_password"),
            smtp_starttls=endpoint[2],
            smtp_owner="tenant",
        )
    password = settings.smtp_password
    return EmailConfig(
        **common,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_username=settings.smtp_username,
        smtp_password=password.get_secret_value() if password is not None else None,
        smtp_starttls=settings.smtp_starttls,
        smtp_owner="operator",
    )


def effective(
    settings: Settings,
    email: Mapping[str, Any],
    push: Mapping[str, Any],
    from_domains: Sequence[str] | None = None,
) -> ChannelConfig:
    """The configuration in force given the settings, a tenant's overrides and its from-domains.

    ``from_domains`` is the tenant's own list (None: ``CONVEYOR_EMAIL_FROM_DOMAINS``).
    """
    own_url = "webhook_url" in push
    return ChannelConfig(
        email=_email(settings, email, from_domains),
        push=PushConfig(
            provider=push.get("provider", settings.push_provider),
            webhook_url=push["webhook_url"] if own_url else settings.push_webhook_url,
            webhook_trusted=not own_url,
        ),
        overrides={"email": dict(email), "push": dict(push)},
    )


def load(conn: Connection, tenant_id: str, settings: Settings) -> ChannelConfig:
    """The tenant's effective channel configuration (secrets still sealed)."""
    row = store.get_overrides(conn, tenant_id)
    domains = tenant_store.get_from_domains(conn, tenant_id)
    if row is None:
        return effective(settings, {}, {}, domains)
    return effective(settings, row["email"] or {}, row["push"] or {}, domains)


def open_email(config: EmailConfig, vault: Vault, tenant_id: str) -> EmailConfig:
    """The config with the tenant's SMTP password opened (just before a send).

    Raises:
        SecretKeyMissing, SecretUnreadable: the stored password does not open.
    """
    if config.smtp_trusted or not config.smtp_password:
        return config
    context = secret_context(tenant_id, "email", "smtp_password")
    return replace(config, smtp_password=vault.open(config.smtp_password, context))


def open_push(config: PushConfig, vault: Vault, tenant_id: str) -> PushConfig:
    """The config with the tenant's webhook URL opened (just before a send).

    Raises:
        SecretKeyMissing, SecretUnreadable: the stored URL does not open.
    """
    if config.webhook_trusted or not config.webhook_url:
        return config
    context = secret_context(tenant_id, "push", "webhook_url")
    return replace(config, webhook_url=vault.open(config.webhook_url, context))


def seal_given(
    vault: Vault, tenant_id: str, overrides: Mapping[str, Mapping[str, Any]], given: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """``overrides`` (channel -> values) with the secrets named in ``given`` sealed.

    ``given`` lists ``channel.key`` of the secrets the client just sent, in
    clear; the others are as stored (sealed already).

    Raises:
        SecretKeyMissing: a secret is given and the server has no key.
    """
    out = {channel: dict(values) for channel, values in overrides.items()}
    for name in given:
        channel, _, key = name.partition(".")
        value = out.get(channel, {}).get(key)
        if isinstance(value, str) and value:
            out[channel][key] = vault.seal(value, secret_context(tenant_id, channel, key))
    return out


def has_secrets(overrides: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether stored overrides hold a secret."""
    return any(
        (overrides.get(channel) or {}).get(key) for channel, keys in SECRETS.items() for key in keys
    )


def reseal(
    vault: Vault, tenant_id: str, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]] | None:
    """``overrides`` with every secret sealed under the current key; None if none needed it.

    Raises:
        SecretKeyMissing, SecretUnreadable: a stored secret does not open.
    """
    out = {channel: dict(values or {}) for channel, values in overrides.items()}
    changed = False
    for channel, keys in SECRETS.items():
        for key in keys:
            value = out.get(channel, {}).get(key)
            if isinstance(value, str) and value and vault.needs_reseal(value):
                out[channel][key] = vault.reseal(value, secret_context(tenant_id, channel, key))
                changed = True
    return out if changed else None
