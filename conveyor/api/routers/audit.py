"""``/api/v1/audit``: the tenant's audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from conveyor.api.auth import require
from conveyor.api.deps import get_db
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import (
    PageParams,
    decode_cursor,
    invalid_cursor,
    page_body,
    page_params,
)
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.audit import AuditEntry
from conveyor.api.schemas.common import Page
from conveyor.domain.ids import looks_like_id
from conveyor.domain.scopes import Scope
from conveyor.services import audit as service
from conveyor.services.audit import Action
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], route_class=HygienicRoute)

_ADMIN = require(Scope.KEYS_ADMIN)


@router.get("", response_model=Page[AuditEntry], responses=problem_responses(401, 403, 422))
def list_audit(
    paging: PageParams = Depends(page_params),
    action: Action | None = Query(None, description="only entries of this action"),
    principal: Principal = Depends(_ADMIN),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """The tenant's audit log, newest first: keys created and revoked, channel settings changed.

    Each entry names the API key that acted (null when an operator used the
    CLI), the client address, the time, and what changed (never a secret).
    """
    before = decode_cursor(paging.cursor, str)
    if before is not None and not looks_like_id(before):
        raise invalid_cursor()
    with db.read() as conn:
        page = service.list_entries(
            conn,
            principal.tenant_id,
            limit=paging.limit,
            offset=paging.offset,
            before_id=before,
            action=action,
        )
    return page_body(page, paging, lambda item: str(item["id"]))
