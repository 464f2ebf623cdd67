"""``/api/v1/events``: ingest events (one or a batch), list and read them.

The body is taken as raw JSON and each event is checked on its own, so one
bad event is rejected with its reason while the others are stored: FastAPI's
own validation would refuse the whole request for it. That goes for JSON
flaws too (``per_item_json``): an event holding NaN, Infinity or a lone
surrogate is rejected with ``malformed_json``, one nested too deep with
``validation_error``; only a flaw outside any event (a key of the batch
object) refuses the whole request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter

from conveyor.api.auth import require
from conveyor.api.batch_items import Refused, body_error, check_item, inline_defs, item_list
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.list_filters import decode_position, encode_position, merge_filters
from conveyor.api.pagination import PageParams, page_params
from conveyor.api.ratelimit import items_cost
from conveyor.api.routing import (
    HygienicRoute,
    json_suspicion,
    per_item_json,
    reads_filters,
)
from conveyor.api.run_filters import Id, Time
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.api.schemas.events import Event, EventBatch, EventIn, EventIngestion, EventPage
from conveyor.domain import jsonsafe
from conveyor.domain.scopes import Scope
from conveyor.services import events as service
from conveyor.services.events import MAX_BATCH, ItemResult, NewEvent
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/events", tags=["events"], route_class=HygienicRoute)

_READ = require(Scope.EVENTS_READ)
_WRITE = require(Scope.EVENTS_WRITE)


def _body_schema() -> dict[str, Any]:
    schema = TypeAdapter(EventIn | EventBatch).json_schema()
    body = inline_defs(schema, schema.get("$defs", {}))
    # A batch's items are checked one by one: one that is not an event is
    # rejected in its own result and the others are stored, so the batch takes
    # any item (the schema says so); an event sent alone must be one (422).
    for option in body["anyOf"]:
        events = option.get("properties", {}).get("events")
        if events is not None:
            events["items"] = {
                "anyOf": [events["items"], {}],
                "description": "an event; an item that is not one is rejected in its own "
                "result (`validation_error`), the others are stored",
            }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def _items(body: Any, suspicion: jsonsafe.Suspicion) -> list[Any]:
    """The raw events of the body: one event, or the list under ``events``; 422 otherwise."""
    if not isinstance(body, dict):
        raise body_error((), 'send one event object, or {"events": [...]}', "dict_type")
    if "events" not in body:
        return [body]
    return item_list(body, "events", "events", MAX_BATCH, suspicion)


def _event_id(raw: Any) -> str | None:
    """The id an item gives itself, to name it in its result (if it can be sent back)."""
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(raw_id, str) and len(raw_id) <= 200 and jsonsafe.find_flaw(raw_id) is None:
        return raw_id
    return None


def _check(index: int, raw: Any, suspicion: jsonsafe.Suspicion) -> NewEvent | ItemResult:
    """One item, checked on its own: the event, or its rejection."""
    event = check_item(raw, suspicion, EventIn, "event")
    if isinstance(event, Refused):
        return service.rejected(index, _event_id(raw), event.code, event.reason, event.errors)
    return NewEvent(
        index=index,
        id=event.id,
        name=event.name,
        identity=event.identity.model_dump() if event.identity is not None else None,
        payload=event.payload,
        occurred_at=event.occurred_at,
    )


@router.post(
    "",
    response_model=EventIngestion,
    responses={
        207: {"model": EventIngestion, "description": "some events were rejected (see results)"},
        **problem_responses(400, 401, 403, 413, 422),
    },
    openapi_extra=_body_schema(),
)
@per_item_json
def ingest_events(
    request: Request,
    body: Any = Body(description='one event, or `{"events": [...]}` with up to 1,000'),
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
    settings: Settings = Depends(get_settings),
) -> SafeJSONResponse:
    """Ingest one event or a batch of up to 1,000; each gets its own result.

    Each event is `accepted` (stored; `runs_started` lists the runs it started),
    `duplicate` (its `id` was stored before: nothing is stored or started again)
    or `rejected` (with `code` and `reason`; the others are still stored). One
    request starts at most `CONVEYOR_MAX_RUNS_PER_REQUEST` runs: events that
    would start more are rejected whole (`too_many_runs`), to be sent again. The
    answer is **200** when no event was rejected and **207** when some (or all)
    were; the body is the same. A body that is not an event or a batch, one
    event alone that is not a valid event, or a batch of more than 1,000, is a
    422 and stores nothing.

    An event holding NaN, Infinity or a lone surrogate is rejected with
    `malformed_json`, one nested deeper than 64 levels with `validation_error`
    (`reason` names the place as a JSON pointer into the event).
    """
    suspicion = json_suspicion(request)
    items = _items(body, suspicion)
    if len(items) > 1:  # a batch costs one request per hundred events
        request.app.state.rate_limits.charge(principal.key_id, items_cost(len(items)) - 1)
    checked = [_check(i, raw, suspicion) for i, raw in enumerate(items)]
    lone = checked[0] if "events" not in body else None
    if isinstance(lone, ItemResult) and lone.code == "validation_error":
        # One event alone, not a batch: a body that is no event is the request's
        # fault, as everywhere else (422); in a batch it only rejects its item.
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in lone.errors or []])
    events = [c for c in checked if isinstance(c, NewEvent)]
    results = {c.index: c for c in checked if isinstance(c, ItemResult)}
    if events:
        # The service runs its write again if PostgreSQL aborts it (a deadlock
        # with a worker's round, see docs/operating.md).
        ingested = service.ingest_events(
            db, principal.tenant_id, events, now, max_runs=settings.max_runs_per_request
        )
        for result in ingested:
            results[result.index] = result
    ordered = [results[i].as_dict() for i in range(len(checked))]
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for item in ordered:
        counts[item["status"]] += 1
    content = {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": ordered,
    }
    # Built by hand rather than through the response model: a batch answer has a
    # thousand items, and validating them again would cost more than storing them.
    return SafeJSONResponse(content, status_code=207 if counts["rejected"] else 200)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "name": TypeAdapter(str),
    "contact_id": TypeAdapter(Id),
    "occurred_after": TypeAdapter(Time),
    "occurred_before": TypeAdapter(Time),
}


@reads_filters(_ADAPTERS)
async def _filters(
    request: Request,
    name: str | None = Query(None, description="only events with this name"),
    contact_id: Id | None = Query(None, description="only events about this contact"),
    occurred_after: Time | None = Query(
        None, description="only events that occurred at or after this RFC 3339 time"
    ),
    occurred_before: Time | None = Query(
        None, description="only events that occurred before this RFC 3339 time"
    ),
) -> dict[str, Any]:
    plain = {
        "name": name,
        "contact_id": contact_id,
        "occurred_after": occurred_after,
        "occurred_before": occurred_before,
    }
    return merge_filters(request, plain, _ADAPTERS)


@router.get("", response_model=EventPage, responses=problem_responses(401, 403, 422))
def list_events(
    paging: PageParams = Depends(page_params),
    filters: dict[str, Any] = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List stored events, latest `occurred_at` first.

    Filters (all given must hold; each also answers to `filter[name]=`): `name`,
    `contact_id`, `occurred_after` (inclusive), `occurred_before` (exclusive).
    `total` is exact up to 10,000 matches (`total_exact`).
    """
    after = decode_position(paging.cursor)
    offset = 0 if after is not None else paging.offset
    with db.read() as conn:
        page = service.list_events(
            conn, principal.tenant_id, limit=paging.limit, offset=offset, after=after, **filters
        )
    last = page.pop("last")
    return {
        **page,
        "limit": paging.limit,
        "offset": offset,
        "next_cursor": encode_position(*last) if last is not None else None,
    }


@router.get("/{event_id}", response_model=Event, responses=problem_responses(401, 403, 404))
def get_event(
    event_id: str = Path(description="the event's id (as the client gave it)"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One stored event."""
    with db.read() as conn:
        return service.get_event(conn, principal.tenant_id, event_id)
