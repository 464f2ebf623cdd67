"""``/api/v1/automations``: definitions, their versions, and triggering runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import PageParams, decode_cursor, page_body, page_params
from conveyor.api.routing import HygienicRoute, fast_path
from conveyor.api.safe_json import to_json
from conveyor.api.schemas.automations import Automation, AutomationSummary, AutomationVersion
from conveyor.api.schemas.common import Page
from conveyor.api.schemas.dry_runs import DryRun
from conveyor.api.schemas.run_lists import RunSummary
from conveyor.api.schemas.runs import TriggerRequest
from conveyor.api.trigger_groups import TriggerGroups
from conveyor.domain.scopes import Scope
from conveyor.services import automations as service
from conveyor.services import dry_runs as dry_run_service
from conveyor.services.grouped_triggers import Trigger
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/automations", tags=["automations"], route_class=HygienicRoute)

_READ = require(Scope.AUTOMATIONS_READ)
_WRITE = require(Scope.AUTOMATIONS_WRITE)
_TRIGGER = require(Scope.AUTOMATIONS_TRIGGER)

AutomationRef = Path(description="the automation's id, or its name", examples=["order-follow-up"])
# The body is taken as raw JSON and validated by the service, so that every
# problem with a definition comes back the same way (`invalid_definition`).
# OpenAPI still shows the real schema, which app.py adds to the components.
DefinitionBody = Body(description="the automation definition")
_DEFINITION_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AutomationDefinition"}}
        },
    }
}


def _created_by(principal: Principal) -> str:
    return f"api_key:{principal.key_id}"


@router.get(
    "",
    response_model=Page[AutomationSummary],
    responses=problem_responses(401, 403, 422),
)
def list_automations(
    paging: PageParams = Depends(page_params),
    enabled: bool | None = Query(None, description="only enabled (true) or disabled (false)"),
    trigger_type: str | None = Query(None, description="only this trigger type"),
    filter_enabled: bool | None = Query(None, alias="filter[enabled]", include_in_schema=False),
    filter_trigger_type: str | None = Query(
        None, alias="filter[trigger_type]", include_in_schema=False
    ),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List live automations by name, without their definitions."""
    after = decode_cursor(paging.cursor, str)
    with db.read() as conn:
        page = service.list_automations(
            conn,
            principal.tenant_id,
            limit=paging.limit,
            offset=paging.offset,
            after_name=after,
            enabled=enabled if enabled is not None else filter_enabled,
            trigger_type=trigger_type or filter_trigger_type,
        )
    return page_body(page, paging, lambda item: str(item["name"]))


@router.post(
    "",
    status_code=201,
    response_model=Automation,
    responses=problem_responses(400, 401, 403, 409, 413, 422),
    openapi_extra=_DEFINITION_SCHEMA,
)
def create_automation(
    response: Response,
    definition: Any = DefinitionBody,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Create an automation from its definition; it starts at version 1.

    Every problem in the definition is reported at once, as `invalid_definition`
    with `errors` (`loc` is the path into the definition). A step `url` that is
    a literal private address, or a host the server denies, is a 422
    `egress_denied` (its `errors` name the field). A live automation with the
    same name is a 409 `automation_name_taken`.
    """
    with db.transaction() as conn:
        created = service.create_automation(
            conn,
            principal.tenant_id,
            definition,
            now=now,
            created_by=_created_by(principal),
            egress=settings.egress_policy(),
        )
    response.headers["Location"] = f"{router.prefix}/{created['id']}"
    return created


@router.get(
    "/{automation_id}",
    response_model=Automation,
    responses=problem_responses(401, 403, 404),
)
def get_automation(
    automation_id: str = AutomationRef,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One automation, by id or name, with its current definition."""
    with db.read() as conn:
        return service.get_automation(conn, principal.tenant_id, automation_id)


@router.put(
    "/{automation_id}",
    response_model=Automation,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    openapi_extra=_DEFINITION_SCHEMA,
)
def update_automation(
    automation_id: str = AutomationRef,
    definition: Any = DefinitionBody,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replace an automation's definition: this always makes a new version.

    Runs already started keep the version they started on; new runs use this
    one. A different `name` in the definition renames the automation. The
    definition is checked as on create (`invalid_definition`, `egress_denied`).
    """
    with db.transaction() as conn:
        return service.update_automation(
            conn,
            principal.tenant_id,
            automation_id,
            definition,
            now=now,
            created_by=_created_by(principal),
            egress=settings.egress_policy(),
        )


@router.delete(
    "/{automation_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
)
def delete_automation(
    automation_id: str = AutomationRef,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> Response:
    """Delete an automation. Its runs and versions are kept; its name becomes free."""
    with db.transaction() as conn:
        service.delete_automation(conn, principal.tenant_id, automation_id, now=now)
    return Response(status_code=204)


@router.get(
    "/{automation_id}/versions",
    response_model=Page[AutomationVersion],
    responses=problem_responses(401, 403, 404, 422),
)
def list_versions(
    automation_id: str = AutomationRef,
    paging: PageParams = Depends(page_params),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List an automation's versions, newest first, with their definitions."""
    before = decode_cursor(paging.cursor, int)
    with db.read() as conn:
        page = service.list_versions(
            conn,
            principal.tenant_id,
            automation_id,
            limit=paging.limit,
            offset=paging.offset,
            before_version=before,
        )
    return page_body(page, paging, lambda item: int(item["version"]))


_KEY_HEADER_MAX = 255  # the longest `Idempotency-Key` header the trigger takes


async def _trigger_fast(request: Request, parsed: Any) -> Response | None:
    """The trigger of a run without FastAPI's dependency solving (``fast_path``).

    Declines (None), before anything is charged or written, what FastAPI
    would refuse or the endpoint treat otherwise: no body or one that is not
    a valid ``TriggerRequest``, an ``Idempotency-Key`` header of a length the
    route refuses, a dry run. What it takes is answered as ``trigger_automation``
    answers it: the key's scope checked the same way, then ``_start_run``.
    """
    if not isinstance(parsed, dict):
        return None
    try:
        body = TriggerRequest.model_validate(parsed)
    except ValidationError:
        return None
    header = request.headers.get("idempotency-key")
    if header is not None and not 1 <= len(header) <= _KEY_HEADER_MAX:
        return None
    if _is_dry_run(body):
        return None
    principal = await _TRIGGER.of(request)
    return await _start_run(request, request.path_params["automation_id"], body, header, principal)


@router.post(
    "/{automation_id}/trigger",
    status_code=202,
    response_model=RunSummary | DryRun,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
@fast_path(_trigger_fast)
async def trigger_automation(
    request: Request,
    response: Response,
    automation_id: str = AutomationRef,
    body: TriggerRequest = Body(default_factory=TriggerRequest),
    idempotency_key_header: str | None = Header(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=_KEY_HEADER_MAX,
        description="same as `idempotency_key` in the body",
    ),
    principal: Principal = Depends(_TRIGGER),
) -> Any:
    """Start a run of the automation's current version; 202 with the run.

    The run is pinned to that version: later changes to the automation do not
    affect it. With an idempotency key (in the body or the `Idempotency-Key`
    header), a repeat returns the first run, with `Idempotent-Replayed: true`,
    instead of starting another.

    With `dry_run: true`, nothing runs: 202 with a dry run (follow it at
    `/api/v1/dry-runs/{id}`) that simulates the automation for each day from
    `start_date` to `end_date` and each contact, sending and starting nothing.
    Without dates the range is today in the dry run's `timezone`; with one
    date alone, that one day.
    """
    # The common case (a valid body, no dry run) is answered by _trigger_fast
    # before FastAPI solves these parameters; this is the rest.
    state = request.app.state
    if _is_dry_run(body):
        return await run_in_threadpool(
            _dry_run,
            response,
            automation_id,
            body,
            principal,
            state.db,
            state.clock.now(),
            state.settings,
        )
    return await _start_run(request, automation_id, body, idempotency_key_header, principal)


async def _start_run(
    request: Request,
    automation_id: str,
    body: TriggerRequest,
    idempotency_key_header: str | None,
    principal: Principal,
) -> Response:
    """Start the run (or find the idempotent repeat's); 202 with its summary."""
    key = body.idempotency_key
    if idempotency_key_header is not None:
        if key is not None and key != idempotency_key_header:
            raise RequestValidationError(
                [
                    {
                        "loc": ("header", "Idempotency-Key"),
                        "msg": "differs from `idempotency_key` in the body",
                        "type": "idempotency_key_mismatch",
                    }
                ]
            )
        key = idempotency_key_header
    # Written with the triggers that arrive meanwhile, in one transaction (trigger_groups).
    groups: TriggerGroups = request.app.state.trigger_groups
    run, created = await groups.start(
        Trigger(
            tenant_id=principal.tenant_id,
            automation_ref=automation_id,
            payload=body.payload,
            identity=body.identity.model_dump() if body.identity else None,
            idempotency_key=key,
            source_type="api_key",
            source_id=principal.key_id,
        )
    )
    # Written as it is, without validating it against RunSummary on the way out:
    # run_summary makes exactly that shape (a contract test holds it to the
    # model, test_trigger_and_runs); the schema still documents the model.
    return Response(
        to_json(run, where="POST trigger"),
        status_code=202,
        media_type="application/json",
        headers=None if created else {"Idempotent-Replayed": "true"},
    )


def _is_dry_run(body: TriggerRequest) -> bool:
    """Whether the body asks for a dry run (or gives a dry-run field, which is refused)."""
    return body.dry_run or bool(_DRY_RUN_FIELDS & _given(body))


_DRY_RUN_FIELDS = frozenset({"start_date", "end_date", "timezone", "profile_ids", "version"})
_RUN_FIELDS = frozenset({"identity", "idempotency_key"})


def _given(body: TriggerRequest) -> set[str]:
    """The fields the request gave a value (an explicit null is as good as absent)."""
    return {name for name in body.model_fields_set if getattr(body, name) is not None}


def _dry_run(
    response: Response,
    automation_id: str,
    body: TriggerRequest,
    principal: Principal,
    db: Database,
    now: datetime,
    settings: Settings,
) -> dict[str, Any]:
    """The dry-run branch of the trigger: check the fields, record the dry run."""
    errors: list[dict[str, Any]] = []
    if not body.dry_run:
        for name in sorted(_DRY_RUN_FIELDS & _given(body)):
            errors.append(
                {
                    "loc": ("body", name),
                    "msg": "only with `dry_run: true`",
                    "type": "dry_run_fields",
                }
            )
    else:
        for name in sorted(_RUN_FIELDS & _given(body)):
            errors.append(
                {"loc": ("body", name), "msg": "not with `dry_run`", "type": "dry_run_fields"}
            )
    if errors:
        raise RequestValidationError(errors)
    with db.transaction() as conn:
        dry_run = dry_run_service.request_dry_run(
            conn,
            principal.tenant_id,
            automation_id,
            start_date=body.start_date,
            end_date=body.end_date,
            timezone=body.timezone,
            profile_ids=body.profile_ids,
            version=body.version,
            payload=body.payload,
            requested_by=principal.requester,
            max_days=settings.dry_run_max_days,
            history_days=settings.retention_events_days,
            now=now,
        )
    response.headers["Location"] = f"/api/v1/dry-runs/{dry_run['id']}"
    return dry_run
