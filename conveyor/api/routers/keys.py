"""``/api/v1/keys``: API keys of the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from conveyor.api.auth import client_address, require
from conveyor.api.deps import get_db, get_now
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import (
    PageParams,
    decode_cursor,
    invalid_cursor,
    page_body,
    page_params,
)
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.common import Page
from conveyor.api.schemas.keys import ApiKey, ApiKeyCreate, ApiKeyCreated
from conveyor.domain.ids import looks_like_id
from conveyor.domain.scopes import Scope
from conveyor.services import keys as service
from conveyor.services.audit import Actor
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], route_class=HygienicRoute)

_ADMIN = require(Scope.KEYS_ADMIN)


@router.get("", response_model=Page[ApiKey], responses=problem_responses(401, 403, 422))
def list_keys(
    paging: PageParams = Depends(page_params),
    include_revoked: bool = Query(True, description="false leaves revoked keys out"),
    principal: Principal = Depends(_ADMIN),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List the tenant's API keys, oldest first. Tokens are never shown again."""
    after = decode_cursor(paging.cursor, str)
    if after is not None and not looks_like_id(after):
        raise invalid_cursor()
    with db.read() as conn:
        page = service.list_keys(
            conn,
            principal.tenant_id,
            limit=paging.limit,
            offset=paging.offset,
            after_id=after,
            include_revoked=include_revoked,
        )
    return page_body(page, paging, lambda item: str(item["id"]))


@router.post(
    "",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=problem_responses(400, 401, 403, 413, 422),
)
def create_key(
    body: ApiKeyCreate,
    request: Request,
    response: Response,
    principal: Principal = Depends(_ADMIN),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Create an API key; the response holds its token, which is not shown again.

    A key can only grant scopes it holds itself (403 otherwise). With
    `expires_at`, the key stops working then (401, as if revoked). The
    creation is written to the audit log.
    """
    try:
        with db.transaction() as conn:
            key, token = service.create_key(
                conn,
                tenant_id=principal.tenant_id,
                label=body.label,
                scopes=[s.value for s in body.scopes],
                now=now,
                granted_by=principal,
                expires_at=body.expires_at,
                actor=Actor.of(principal, client_address(request)),
            )
    except ValueError as exc:  # expires_at not in the future
        raise RequestValidationError(
            [{"loc": ("body", "expires_at"), "msg": str(exc), "type": "expires_in_past"}]
        ) from None
    response.headers["Location"] = f"{router.prefix}/{key['id']}"
    response.headers["Cache-Control"] = "no-store"
    return {**key, "token": token}


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
def revoke_key(
    request: Request,
    key_id: str = Path(description="the key's id"),
    principal: Principal = Depends(_ADMIN),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> Response:
    """Revoke an API key: it stops working at once on this server process, and within
    `CONVEYOR_AUTH_CACHE_SECONDS` (default 5) on others. Revoking twice is harmless.

    A key can only revoke keys whose scopes it holds itself (403 otherwise).
    The revocation is written to the audit log.
    """
    with db.transaction() as conn:
        service.revoke_key(
            conn,
            principal.tenant_id,
            key_id,
            now=now,
            revoked_by=principal,
            actor=Actor.of(principal, client_address(request)),
        )
    # This process forgets it at once; other processes within their cache's TTL.
    request.app.state.principals.forget_key(key_id)
    return Response(status_code=204)
