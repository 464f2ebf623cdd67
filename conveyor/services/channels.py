"""Channel settings use cases: read the effective configuration, replace a tenant's overrides."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.channels import config as channel_config
from conveyor.channels.config import EMAIL_KEYS, PUSH_KEYS, SECRET_KEYS, ChannelConfig
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import EgressDenied
from conveyor.settings import Settings
from conveyor.store import channel_settings as store


def _public(values: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        if key in SECRET_KEYS:
            out[f"{key}_set"] = bool(values.get(key))  # write-only: only whether it is set
        else:
            out[key] = values.get(key)
    return out


def settings_view(cfg: ChannelConfig, updated_at: datetime | None) -> dict[str, Any]:
    """What the API shows: the effective values (secrets as set / not set) and what overrides."""
    e, p = cfg.email, cfg.push
    email = {
        "provider": e.provider,
        "from": e.sender,
        "smtp_host": e.smtp_host,
        "smtp_port": e.smtp_port,
        "smtp_username": e.smtp_username,
        "smtp_password": e.smtp_password,
        "smtp_starttls": e.smtp_starttls,
    }
    push = {"provider": p.provider, "webhook_url": p.webhook_url}
    return {
        "email": _public(email, EMAIL_KEYS),
        "push": _public(push, PUSH_KEYS),
        "overridden": {
            "email": sorted(cfg.overrides.get("email", {})),
            "push": sorted(cfg.overrides.get("push", {})),
        },
        "updated_at": updated_at,
    }


def get_channel_settings(conn: Connection, tenant_id: str, settings: Settings) -> dict[str, Any]:
    """The tenant's effective channel settings."""
    row = store.get_overrides(conn, tenant_id)
    cfg = channel_config.load(conn, tenant_id, settings)
    return settings_view(cfg, row["updated_at"] if row else None)


def check_channel_settings(
    settings: Settings, email: Mapping[str, Any], push: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """What would keep this configuration from sending, as ``{loc, msg, type}`` items."""
    cfg = channel_config.effective(settings, email, push)
    problems = []
    for name, problem in (("email", cfg.email.problem()), ("push", cfg.push.problem())):
        if problem is not None:
            problems.append({"loc": ["body", name], "msg": problem, "type": "incomplete_channel"})
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


def merge_overrides(
    conn: Connection,
    tenant_id: str,
    *,
    email: Mapping[str, Any],
    push: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The overrides a replace stores: ``email`` and ``push`` as given, plus kept secrets.

    A secret left out is kept from the stored overrides: the API never shows
    it, so a client saving the other fields could not send it back. Giving it
    as null removes it (the environment's value applies again).
    """
    row = store.get_overrides(conn, tenant_id)
    stored_email = (row["email"] or {}) if row is not None else {}
    new_email = dict(email)
    for key in SECRET_KEYS:
        if key not in new_email and key in stored_email:
            new_email[key] = stored_email[key]
    return (
        {k: v for k, v in new_email.items() if v is not None},
        {k: v for k, v in push.items() if v is not None},
    )


def save_channel_settings(
    conn: Connection,
    tenant_id: str,
    settings: Settings,
    *,
    email: Mapping[str, Any],
    push: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Replace the tenant's overrides (secrets not given are kept) and return the view.

    The caller checks ``check_channel_settings`` on the merged overrides first.
    """
    store.put_overrides(conn, tenant_id, email=dict(email), push=dict(push), now=now)
    return get_channel_settings(conn, tenant_id, settings)
