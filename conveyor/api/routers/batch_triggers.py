"""``POST /api/v1/automations/{id}/trigger/batch``: up to 1,000 runs in one request.

As on ``POST /events``, the body is taken as raw JSON and each item is checked
on its own (``per_item_json``), so one bad item is rejected with its reason
while the others start their runs; only a flaw outside every item (the batch
object itself, its size) refuses the whole request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import TypeAdapter

from conveyor.api.auth import require
from conveyor.api.batch_items import Refused, body_error, check_item, inline_defs, item_list
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.ratelimit import items_cost
from conveyor.api.routers.automations import AutomationRef
from conveyor.api.routing import HygienicRoute, json_suspicion, per_item_json
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.api.schemas.batch_triggers import (
    BatchTriggerItem,
    BatchTriggerOutcome,
    BatchTriggerRequest,
)
from conveyor.domain import jsonsafe
from conveyor.domain.scopes import Scope
from conveyor.services import batch_triggers as service
from conveyor.services.batch_triggers import MAX_BATCH, BatchItem, TriggerResult
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/automations", tags=["automations"], route_class=HygienicRoute)

_TRIGGER = require(Scope.AUTOMATIONS_TRIGGER)


def _body_schema() -> dict[str, Any]:
    schema = TypeAdapter(BatchTriggerRequest).json_schema()
    body = inline_defs(schema, schema.get("$defs", {}))
    # Items are checked one by one: one that is not a valid item is rejected in
    # its own result and the others start their runs, so the schema takes any.
    runs = body["properties"]["runs"]
    runs["items"] = {
        "anyOf": [runs["items"], {}],
        "description": "a run to start; an item that is not one is rejected in its own "
        "result (`validation_error`), the others start their runs",
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def _items(body: Any, suspicion: jsonsafe.Suspicion) -> list[Any]:
    """The raw items of the body: the list under ``runs``; 422 otherwise."""
    if not isinstance(body, dict):
        raise body_error((), 'send {"runs": [...]}', "dict_type")
    items = item_list(body, "runs", "runs", MAX_BATCH, suspicion)
    if not items:
        raise body_error(("runs",), "a batch holds at least one run", "too_short")
    return items


def _key(raw: Any) -> str | None:
    """The idempotency key an item gives, to name it in its result (if it can be sent back)."""
    key = raw.get("idempotency_key") if isinstance(raw, dict) else None
    if isinstance(key, str) and 0 < len(key) <= 500 and jsonsafe.find_flaw(key) is None:
        return key
    return None


def _check(index: int, raw: Any, suspicion: jsonsafe.Suspicion) -> BatchItem | TriggerResult:
    """One item, checked on its own: the run asked for, or its rejection."""
    item = check_item(raw, suspicion, BatchTriggerItem, "item")
    if isinstance(item, Refused):
        return service.rejected(index, _key(raw), item.code, item.reason, item.errors)
    return BatchItem(
        index=index,
        payload=item.payload,
        identity=item.identity.model_dump() if item.identity is not None else None,
        idempotency_key=item.idempotency_key,
    )


@router.post(
    "/{automation_id}/trigger/batch",
    response_model=BatchTriggerOutcome,
    responses={
        207: {"model": BatchTriggerOutcome, "description": "some items were rejected"},
        **problem_responses(400, 401, 403, 404, 409, 413, 422),
    },
    openapi_extra=_body_schema(),
)
@per_item_json
def trigger_batch(
    request: Request,
    automation_id: str = AutomationRef,
    body: Any = Body(description='`{"runs": [...]}` with 1 to 1,000 runs'),
    principal: Principal = Depends(_TRIGGER),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
    settings: Settings = Depends(get_settings),
) -> SafeJSONResponse:
    """Start up to 1,000 runs of the automation's current version; each item gets its own result.

    Each item (`payload`, `identity`, `idempotency_key`, as on the single trigger)
    is `accepted` (its run was created: `run_id`), `duplicate` (its
    `idempotency_key` names a run of the automation already, or an earlier item
    of the request took it: `run_id` is that run, nothing is started) or
    `rejected` (with `code` and `reason`; the others still start their runs).
    One request starts at most `CONVEYOR_MAX_RUNS_PER_REQUEST` runs: the items
    past it are rejected (`too_many_runs`), to be sent again. The answer is
    **200** when no item was rejected and **207** when some (or all) were; the
    body is the same. A body that is not `{"runs": [...]}` with 1 to 1,000
    items is a 422 and starts nothing; a disabled automation is a 409
    `automation_disabled` (unless every item's key names an existing run).

    The `Idempotency-Key` header covers the whole request (as on every POST);
    items' `idempotency_key`s are run keys. A batch costs one request of the
    rate limit per hundred items.
    """
    suspicion = json_suspicion(request)
    items = _items(body, suspicion)
    # A batch costs one request per hundred items (the first was charged already).
    extra = items_cost(len(items)) - 1
    if extra:
        request.app.state.rate_limits.charge(principal.key_id, extra)
    checked = [_check(i, raw, suspicion) for i, raw in enumerate(items)]
    asked = [c for c in checked if isinstance(c, BatchItem)]
    results = {c.index: c for c in checked if isinstance(c, TriggerResult)}
    # Called even when every item was rejected: an unknown automation is still a 404.
    # The service runs its write again if PostgreSQL aborts it.
    for result in service.trigger_batch(
        db,
        principal.tenant_id,
        automation_id,
        asked,
        now,
        source_type="api_key",
        source_id=principal.key_id,
        max_runs=settings.max_runs_per_request,
    ):
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
    # Built by hand rather than through the response model, as on POST /events.
    return SafeJSONResponse(content, status_code=207 if counts["rejected"] else 200)
