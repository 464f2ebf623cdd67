"""``/api/v1/settings/channels``: how the tenant's emails and push notifications leave."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from conveyor.api.auth import client_address, require
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.channels import ChannelSettings, ChannelSettingsPut
from conveyor.domain.scopes import Scope
from conveyor.services import channels as service
from conveyor.services.audit import Actor
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/settings/channels", tags=["settings"], route_class=HygienicRoute)

_READ = require(Scope.SETTINGS_READ)
_WRITE = require(Scope.SETTINGS_WRITE)


@router.get(
    "",
    response_model=ChannelSettings,
    responses=problem_responses(401, 403),
)
def get_channel_settings(
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """The tenant's own channel settings; the server's defaults are never shown.

    A field the tenant does not set is null and listed in `defaults`: the
    server's setting is in use. The SMTP password and the webhook URL are
    write-only: `smtp_password_set` and `webhook_url_set` say whether there is one.
    """
    with db.read() as conn:
        return service.get_channel_settings(conn, principal.tenant_id, settings)


@router.put(
    "",
    response_model=ChannelSettings,
    responses=problem_responses(400, 401, 403, 413, 422),
)
def put_channel_settings(
    request: Request,
    body: ChannelSettingsPut = Body(),
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replace the tenant's overrides of the `CONVEYOR_*` channel settings.

    A field left out or null falls back to the server's setting, except the
    write-only `smtp_password` and `webhook_url`: left out, the stored one is
    kept; null removes it. The SMTP server is one unit: setting any of
    `smtp_host`, `smtp_port`, `smtp_starttls`, `smtp_username`, `smtp_password`
    makes the whole server the tenant's (`smtp_host` required; the server's
    credentials are never used with it), and a new host, port or STARTTLS
    choice drops a stored password unless a new one is given.

    422 when the result cannot send (the `smtp` provider without a host,
    `webhook` without a URL, a username without a password, AUTH without
    STARTTLS to the tenant's server, `apprise` when the server allows no
    Apprise scheme); `egress_denied` for an `smtp_host` or `webhook_url` that is
    a literal private address or a denied host; `sender_not_allowed` for a
    `from` outside the domains the operator allows this tenant on its relay;
    `secret_key_missing` for a secret the server has no key to store.
    Changes are written to the audit log.
    """
    email = body.email.model_dump(by_alias=True, exclude_unset=True)
    push = body.push.model_dump(exclude_unset=True)
    service.check_channel_egress(settings.egress_policy(), email, push)
    with db.transaction() as conn:
        return service.replace_channel_settings(
            conn,
            principal.tenant_id,
            settings,
            email=email,
            push=push,
            now=now,
            actor=Actor.of(principal, client_address(request)),
        )
