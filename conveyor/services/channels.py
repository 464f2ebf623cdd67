"""Channel settings use cases: the tenant's view, and replacing its overrides.

``replace_channel_settings`` is the one writer of a tenant's channel
settings: it merges what the client sent with what is kept, checks the
result, seals the secrets the client sent, stores, and writes the audit row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.channels import config as channel_config
from conveyor.channels.config import SECRETS, SMTP_UNIT, ChannelConfig, smtp_endpoint
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import ConveyorError, EgressDenied
from conveyor.domain.senders import SenderNotAllowed
from conveyor.services.audit import Action, Actor, record
from conveyor.settings import Settings
from conveyor.store import channel_settings as store
from conveyor.store import tenants as tenant_store


class InvalidChannelSettings(ConveyorError):
    """The channel settings could not send as given (``errors`` names each problem)."""

    code = "validation_error"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        super().__init__(f"invalid input: {summary}", errors=errors)


def settings_view(cfg: ChannelConfig, updated_at: datetime | None) -> dict[str, Any]:
    """What the API shows: the tenant's own values, never the server's defaults or secrets.

    A field the tenant does not set is null and listed in ``defaults`` (the
    server's setting is in use, and what it is stays the operator's). Write-only
    values (the SMTP password, the webhook URL) show only whether they are set.
    """
    own_email = cfg.overrides.get("email", {})
    own_push = cfg.overrides.get("push", {})
    e = cfg.email
    own_smtp = not e.smtp_trusted
    email = {
        "provider": own_email.get("provider"),
        "from": own_email.get("from"),
        "smtp_host": e.smtp_host if own_smtp else None,
        "smtp_port": e.smtp_port if own_smtp else None,
        "smtp_username": e.smtp_username if own_smtp else None,
        "smtp_password_set": own_smtp and bool(e.smtp_password),
        "smtp_starttls": e.smtp_starttls if own_smtp else None,
    }
    email_defaults = [k for k in ("provider", "from") if k not in own_email]
    if not own_smtp:
        email_defaults += list(SMTP_UNIT)
    return {
        "email": email,
        "push": {
            "provider": own_push.get("provider"),
            "webhook_url_set": bool(own_push.get("webhook_url")),
        },
        "defaults": {
            "email": email_defaults,
            "push": [k for k in ("provider", "webhook_url") if k not in own_push],
        },
        "overridden": {"email": sorted(own_email), "push": sorted(own_push)},
        "updated_at": updated_at,
    }


def get_channel_settings(conn: Connection, tenant_id: str, settings: Settings) -> dict[str, Any]:
    """The tenant's channel settings as the API shows them."""
    row = store.get_overrides(conn, tenant_id)
    cfg = channel_config.load(conn, tenant_id, settings)
    return settings_view(cfg, row["updated_at"] if row else None)


def check_channel_egress(
    egress: EgressPolicy, email: Mapping[str, Any], push: Mapping[str, Any]
) -> None:
    """Refuse a tenant's SMTP host or webhook URL that is a literal private address or denied.

    Only the tenant's own values (its overrides) are checked: the server's
    defaults are the operator's, and trusted. Host names are checked again,
    on what they resolve to, at every connection.

    Raises:
        EgressDenied: with ``errors`` naming each field.
    """
    errors = []
    host = email.get("smtp_host")
    why = egress.refusal(host) if isinstance(host, str) else None
    if why is not None:
        errors.append({"loc": ["body", "email", "smtp_host"], "msg": why, "type": "egress_denied"})
    url = push.get("webhook_url")
    why = egress.url_refusal(url) if isinstance(url, str) else None
    if why is not None:
        errors.append({"loc": ["body", "push", "webhook_url"], "msg": why, "type": "egress_denied"})
    if errors:
        raise EgressDenied(errors)


@dataclass
class Merged:
    """The overrides a replace stores, before sealing, and what happened to the secrets."""

    email: dict[str, Any]
    push: dict[str, Any]
    given: list[str] = field(default_factory=list)  # "channel.key" of secrets sent in clear
    password_dropped: bool = False


def merge_overrides(
    stored_email: Mapping[str, Any],
    stored_push: Mapping[str, Any],
    *,
    email: Mapping[str, Any],
    push: Mapping[str, Any],
) -> Merged:
    """``email`` and ``push`` as given (nulls dropped), plus the write-only values kept.

    A write-only value left out is kept from the stored overrides: the API
    never shows it, so a client saving the other fields could not send it
    back; null removes it. The SMTP password is kept only while the server it
    is for stays the same: a new host, port or STARTTLS choice drops it.
    """
    merged = Merged(
        {k: v for k, v in email.items() if v is not None},
        {k: v for k, v in push.items() if v is not None},
    )
    for channel, new, given, stored in (
        ("email", merged.email, email, stored_email),
        ("push", merged.push, push, stored_push),
    ):
        for key in SECRETS[channel]:
            if key in new:
                merged.given.append(f"{channel}.{key}")
            elif key not in given and key in stored:
                new[key] = stored[key]
    if (
        "smtp_password" in merged.email
        and "email.smtp_password" not in merged.given
        and smtp_endpoint(merged.email) != smtp_endpoint(stored_email)
    ):
        del merged.email["smtp_password"]
        merged.password_dropped = True
    return merged


def _problems(settings: Settings, cfg: ChannelConfig, merged: Merged) -> list[dict[str, Any]]:
    """What would keep this configuration from sending, as ``{loc, msg, type}`` items."""
    problems = []
    email_problem = cfg.email.problem()
    if email_problem is not None and merged.password_dropped:
        email_problem += (
            " (the stored password is dropped when `smtp_host`, `smtp_port` or "
            "`smtp_starttls` change: give it again)"
        )
    for name, problem in (("email", email_problem), ("push", cfg.push.problem())):
        if problem is not None:
            problems.append({"loc": ["body", name], "msg": problem, "type": "incomplete_channel"})
    auth = cfg.email.auth_problem()
    if auth is not None:
        problems.append(
            {"loc": ["body", "email", "smtp_starttls"], "msg": auth, "type": "plaintext_auth"}
        )
    if cfg.push.provider == "apprise" and not settings.egress_policy().apprise_schemes:
        problems.append(
            {
                "loc": ["body", "push", "provider"],
                "msg": "Apprise is not available on this server (CONVEYOR_APPRISE_SCHEMES "
                "allows no scheme)",
                "type": "apprise_unavailable",
            }
        )
    return problems


def _changed(stored: Mapping[str, Mapping[str, Any]], new: Merged) -> dict[str, list[str]]:
    """The fields a replace changed, by channel (names only: never a secret's value)."""
    out = {}
    for channel, values in (("email", new.email), ("push", new.push)):
        before = stored[channel]
        out[channel] = sorted(
            k
            for k in set(before) | set(values)
            if before.get(k) != values.get(k) or f"{channel}.{k}" in new.given
        )
    return out


def replace_channel_settings(
    conn: Connection,
    tenant_id: str,
    settings: Settings,
    *,
    email: Mapping[str, Any],
    push: Mapping[str, Any],
    now: datetime,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Replace the tenant's overrides (write-only values left out are kept) and return the view.

    The caller checks where they lead first (``check_channel_egress``).

    Raises:
        InvalidChannelSettings: the result could not send (``errors`` names why).
        SenderNotAllowed: ``from`` is not allowed through the operator's relay.
        SecretKeyMissing: a secret is given and the server has no secret key.
    """
    row = store.lock_overrides(conn, tenant_id)
    stored: dict[str, dict[str, Any]] = {
        "email": dict(row["email"] or {}) if row else {},
        "push": dict(row["push"] or {}) if row else {},
    }
    merged = merge_overrides(stored["email"], stored["push"], email=email, push=push)
    domains = tenant_store.get_from_domains(conn, tenant_id)
    cfg = channel_config.effective(settings, merged.email, merged.push, domains)
    problems = _problems(settings, cfg, merged)
    if problems:
        raise InvalidChannelSettings(problems)
    why = cfg.email.sender_problem()
    if why is not None:
        loc = ["body", "email", "from"]
        raise SenderNotAllowed(why, errors=[{"loc": loc, "msg": why, "type": "sender_not_allowed"}])
    sealed = channel_config.seal_given(
        settings.vault(), tenant_id, {"email": merged.email, "push": merged.push}, merged.given
    )
    store.put_overrides(conn, tenant_id, email=sealed["email"], push=sealed["push"], now=now)
    changed = _changed(stored, merged)
    if actor is not None and (changed["email"] or changed["push"]):
        record(
            conn,
            actor,
            Action.CHANNEL_SETTINGS_CHANGED,
            target_type="channel_settings",
            target_id=None,
            details={"changed": changed},
            now=now,
        )
    return get_channel_settings(conn, tenant_id, settings)
