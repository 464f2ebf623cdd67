"""``/api/v1/messages``: the emails and push notifications send steps delivered (and the outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import TypeAdapter

from conveyor.api.auth import require
from conveyor.api.deps import get_db
from conveyor.api.errors import problem_responses
from conveyor.api.list_filters import decode_position, encode_position, merge_filters
from conveyor.api.pagination import PageParams, page_params
from conveyor.api.routing import HygienicRoute, reads_filters
from conveyor.api.run_filters import Id, Time
from conveyor.api.schemas.common import Page
from conveyor.api.schemas.messages import Message, MessageDetail
from conveyor.api.time_ranges import (
    TIME_RANGE_PATTERN,
    Times,
    fold_created_at,
    query_time_range,
)
from conveyor.domain.scopes import Scope
from conveyor.services import messages as service
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/messages", tags=["messages"], route_class=HygienicRoute)

# Messages are part of runs (run detail lists them), so reading them is `runs:read`.
_READ = require(Scope.RUNS_READ)

Channel = Literal["email", "push"]
Status = Literal["sending", "sent", "failed"]

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "channel": TypeAdapter(Channel),
    "status": TypeAdapter(Status),
    "run_id": TypeAdapter(Id),
    "contact_id": TypeAdapter(Id),
    "template": TypeAdapter(str),
    "created_after": TypeAdapter(Time),
    "created_before": TypeAdapter(Time),
    "created_at": TypeAdapter(Times),
}


@reads_filters(_ADAPTERS)
async def _filters(
    request: Request,
    channel: Channel | None = Query(None, description="only emails, or only push notifications"),
    status: Status | None = Query(None, description="only messages in this status"),
    run_id: Id | None = Query(None, description="only messages of this run"),
    contact_id: Id | None = Query(None, description="only messages to this contact"),
    template: str | None = Query(
        None, min_length=1, max_length=100, description="only this template (its name or id)"
    ),
    created_after: Time | None = Query(
        None, description="only messages created at or after this RFC 3339 time"
    ),
    created_before: Time | None = Query(
        None, description="only messages created before this RFC 3339 time"
    ),
    created_at: str | None = Query(
        None,
        json_schema_extra={"pattern": TIME_RANGE_PATTERN},
        description="only messages created on this UTC day (`2026-06-01`), in the span of "
        "this RFC 3339 time's precision, or in a range `from..to` of days or times (start "
        "included; an end day included whole, an end time excluded; either end may be left out)",
    ),
) -> dict[str, Any]:
    plain = {
        "channel": channel,
        "status": status,
        "run_id": run_id,
        "contact_id": contact_id,
        "template": template,
        "created_after": created_after,
        "created_before": created_before,
        "created_at": query_time_range("created_at", created_at),
    }
    merged = merge_filters(request, plain, _ADAPTERS)
    fold_created_at(merged)
    return merged


@router.get(
    "",
    response_model=Page[Message],
    responses=problem_responses(401, 403, 422),
)
def list_messages(
    paging: PageParams = Depends(page_params),
    filters: dict[str, Any] = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List the tenant's messages, newest first, without their content.

    Filters (each also as `filter[name]=`): `channel`, `status`, `run_id`,
    `contact_id`, `template` (name or id; a name also matches deleted
    templates that had it), `created_after`, `created_before`, `created_at`
    (a day, a time or a range `from..to`). Page with
    `limit` and `offset`, or `cursor`. Messages of the `outbox` provider are
    here like any other: that is the outbox.
    """
    after = decode_position(paging.cursor)
    with db.read() as conn:
        page = service.list_messages(
            conn,
            principal.tenant_id,
            limit=paging.limit,
            offset=paging.offset,
            after=after,
            **filters,
        )
    last = page.items[-1] if page.items else None
    next_cursor = (
        encode_position(datetime.fromisoformat(last["created_at"]), last["id"])
        if page.has_more and last is not None
        else None
    )
    return {
        "items": page.items,
        "total": page.total,
        "limit": paging.limit,
        "offset": paging.offset,
        "next_cursor": next_cursor,
    }


@router.get(
    "/{message_id}",
    response_model=MessageDetail,
    responses=problem_responses(401, 403, 404),
)
def get_message(
    message_id: str = Path(description="the message's id"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One message with its rendered content: what was sent, or stored in the outbox."""
    with db.read() as conn:
        return service.get_message(conn, principal.tenant_id, message_id)
