"""``/api/v1/settings/channels``: how the tenant's emails and push notifications leave."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.exceptions import RequestValidationError

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.channels import ChannelSettings, ChannelSettingsPut
from conveyor.domain.scopes import Scope
from conveyor.services import channels as service
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
    """The channel settings in force: the server's defaults with the tenant's overrides.

    The SMTP password is never shown: `smtp_password_set` says whether there is one.
    `overridden` lists the fields the tenant sets itself.
    """
    with db.read() as conn:
        return service.get_channel_settings(conn, principal.tenant_id, settings)


@router.put(
    "",
    response_model=ChannelSettings,
    responses=problem_responses(400, 401, 403, 413, 422),
)
def put_channel_settings(
    body: ChannelSettingsPut = Body(),
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replace the tenant's overrides of the `CONVEYOR_*` channel settings.

    A field left out or null falls back to the server's setting, except
    `smtp_password`: left out, the stored one is kept (it is write-only);
    null removes it. A result that cannot send (the `smtp` provider without a
    host, `webhook` without a URL, `apprise` when the server allows no Apprise
    scheme) is a 422. An `smtp_host` or `webhook_url` that is a literal private
    address, or a host the server denies, is a 422 `egress_denied`.
    """
    email = body.email.model_dump(by_alias=True, exclude_unset=True)
    push = body.push.model_dump(exclude_unset=True)
    service.check_channel_egress(settings.egress_policy(), email, push)
    with db.transaction() as conn:
        email, push = service.merge_overrides(conn, principal.tenant_id, email=email, push=push)
        problems = service.check_channel_settings(settings, email, push)
        if problems:
            raise RequestValidationError(problems)
        return service.save_channel_settings(
            conn, principal.tenant_id, settings, email=email, push=push, now=now
        )
