"""``/api/v1/templates``: versioned email and push templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import PageParams, decode_cursor, page_body, page_params
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.common import Page
from conveyor.api.schemas.templates import Template, TemplatePut, TemplateVersion
from conveyor.domain.scopes import Scope
from conveyor.services import templates as service
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/templates", tags=["templates"], route_class=HygienicRoute)

_READ = require(Scope.TEMPLATES_READ)
_WRITE = require(Scope.TEMPLATES_WRITE)

TemplateName = Path(
    description="the template's name: lowercase letters, digits, `-`, `_` and `.`",
    pattern=service.NAME.pattern,
    examples=["receipt"],
)


@router.get(
    "",
    response_model=Page[Template],
    responses=problem_responses(401, 403, 422),
)
def list_templates(
    paging: PageParams = Depends(page_params),
    channel: str | None = Query(None, pattern="^(email|push)$", description="only this channel"),
    filter_channel: str | None = Query(
        None, alias="filter[channel]", pattern="^(email|push)$", include_in_schema=False
    ),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List the live templates by name, each with its current version."""
    after = decode_cursor(paging.cursor, str)
    with db.read() as conn:
        page = service.list_templates(
            conn,
            principal.tenant_id,
            limit=paging.limit,
            offset=paging.offset,
            after_name=after,
            channel=channel or filter_channel,
        )
    return page_body(page, paging, lambda item: str(item["name"]))


@router.put(
    "/{name}",
    response_model=Template,
    responses={
        201: {"model": Template, "description": "Created (version 1)"},
        **problem_responses(400, 401, 403, 409, 413, 422),
    },
)
def put_template(
    response: Response,
    body: Annotated[TemplatePut, Body()],
    name: str = TemplateName,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Create a template (201, version 1) or give it a new version (200).

    `channel: email` takes `subject`, `text` and `html`; `channel: push` takes
    `title`, `body` and `data` (a JSON object whose strings are templates). Every
    part is a Jinja2 template; one that does not compile is a 422
    `invalid_template` whose `errors` name the field. A template keeps its
    channel (409 `template_channel_changed`). Send steps use the version that is
    current when they run and record it on the message.
    """
    content = body.model_dump(exclude={"channel"})
    with db.transaction() as conn:
        template, created = service.put_template(
            conn, principal.tenant_id, name, body.channel, content, now=now
        )
    if created:
        response.status_code = 201
        response.headers["Location"] = f"{router.prefix}/{name}"
    return template


@router.get(
    "/{name}",
    response_model=Template,
    responses=problem_responses(401, 403, 404, 422),
)
def get_template(
    name: str = TemplateName,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One template with its current version."""
    with db.read() as conn:
        return service.get_template(conn, principal.tenant_id, name)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422),
)
def delete_template(
    name: str = TemplateName,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> Response:
    """Delete a template. Its name becomes free; messages keep naming the versions they used."""
    with db.transaction() as conn:
        service.delete_template(conn, principal.tenant_id, name, now=now)
    return Response(status_code=204)


@router.get(
    "/{name}/versions",
    response_model=Page[TemplateVersion],
    responses=problem_responses(401, 403, 404, 422),
)
def list_versions(
    name: str = TemplateName,
    paging: PageParams = Depends(page_params),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List a template's versions, newest first, with their content."""
    before = decode_cursor(paging.cursor, int)
    with db.read() as conn:
        page = service.list_versions(
            conn,
            principal.tenant_id,
            name,
            limit=paging.limit,
            offset=paging.offset,
            before_version=before,
        )
    return page_body(page, paging, lambda item: int(item["version"]))
