"""``/api/v1/contacts``: the people runs are about."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, TypeAdapter, WithJsonSchema

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.list_filters import decode_position, encode_position, merge_filters
from conveyor.api.pagination import PageParams, page_params
from conveyor.api.routing import HygienicRoute, reads_filters
from conveyor.api.safe_json import SafeJSONResponse
from conveyor.api.schemas.contacts import (
    Contact,
    ContactErasure,
    ContactPage,
    ContactPatch,
    ContactReplace,
    ContactUpsert,
)
from conveyor.domain.errors import Forbidden
from conveyor.domain.scopes import Scope
from conveyor.services import contacts as service
from conveyor.services import erasure
from conveyor.services.control import actor_of
from conveyor.services.keys import Principal
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"], route_class=HygienicRoute)

_READ = require(Scope.CONTACTS_READ)
_WRITE = require(Scope.CONTACTS_WRITE)

ContactId = Path(description="the contact's id")


def _attribute(value: str) -> tuple[str, str]:
    name, sep, wanted = value.partition(":")
    if not sep or not name:
        raise ValueError("write an attribute filter as `name:value`, e.g. `plan:pro`")
    if len(name) > 200 or '"' in name or "\\" in name:
        raise ValueError('an attribute name has at most 200 characters, without `"` or `\\`')
    return name, wanted


# The schema states what `_attribute` checks (a name before the first `:`).
Attribute = Annotated[
    str,
    AfterValidator(_attribute),
    WithJsonSchema({"type": "string", "pattern": r'^[^:"\\]{1,200}:'}),
]
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "email": TypeAdapter(str),
    "external_id": TypeAdapter(str),
    "attribute": TypeAdapter(list[Attribute]),
}


@reads_filters(_ADAPTERS)
async def _filters(
    request: Request,
    email: str | None = Query(None, description="only the contact with this email (any case)"),
    external_id: str | None = Query(None, description="only the contact with this external id"),
    attribute: list[Attribute] | None = Query(
        None,
        description="`name:value`: only contacts whose attribute `name` is `value` (a string, "
        "or a number or boolean written as JSON: `age:30`, `vip:true`); repeat to require several",
    ),
) -> dict[str, Any]:
    plain = {"email": email, "external_id": external_id, "attribute": attribute}
    return merge_filters(request, plain, _ADAPTERS, repeatable=frozenset({"attribute"}))


@router.get("", response_model=ContactPage, responses=problem_responses(401, 403, 422))
def list_contacts(
    paging: PageParams = Depends(page_params),
    filters: dict[str, Any] = Depends(_filters),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """List contacts, newest first.

    Filters (all given must hold; each also answers to `filter[name]=`):
    `email`, `external_id`, and `attribute=name:value` (repeatable). `total` is
    exact up to 10,000 matches (`total_exact`).
    """
    after = decode_position(paging.cursor)
    with db.read() as conn:
        page = service.list_contacts(
            conn,
            principal.tenant_id,
            email=filters.get("email"),
            external_id=filters.get("external_id"),
            attributes=[tuple(a) for a in filters.get("attribute", [])],
            limit=paging.limit,
            offset=0 if after is not None else paging.offset,
            after=after,
        )
    last = page.pop("last")
    return {
        **page,
        "limit": paging.limit,
        "offset": 0 if after is not None else paging.offset,
        "next_cursor": encode_position(*last) if last is not None else None,
    }


@router.post(
    "",
    response_model=Contact,
    responses={
        200: {"description": "an existing contact, updated", "model": Contact},
        201: {"description": "a new contact", "model": Contact},
        **problem_responses(400, 401, 403, 409, 413, 422),
    },
)
def upsert_contact(
    response: Response,
    body: ContactUpsert,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Create or update the contact with this `email` and/or `external_id`.

    201 with `Location` when the contact is new, 200 when it existed. The
    external id wins: a contact found by it takes the new email. 409
    `contact_conflict` when the email and the external id belong to two
    different contacts (or the email's contact has another external id).
    422 `egress_denied` when a push target is a URL to a literal private
    address or a host the server denies.
    """
    # In an upsert, null means "not given" (to clear a field, PATCH the contact).
    fields = body.model_dump(exclude_none=True)
    service.check_push_targets(settings.egress_policy(), body.push_targets)
    if body.push_targets is not None:
        fields["push_targets"] = _sealed(settings, principal, body.push_targets)
    with db.transaction() as conn:
        contact, created = service.upsert_contact(conn, principal.tenant_id, fields, now)
    if created:
        response.status_code = 201
        response.headers["Location"] = f"{router.prefix}/{contact['id']}"
    return contact


@router.get("/{contact_id}", response_model=Contact, responses=problem_responses(401, 403, 404))
def get_contact(
    contact_id: str = ContactId,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One contact."""
    with db.read() as conn:
        return service.get_contact(conn, principal.tenant_id, contact_id)


@router.put(
    "/{contact_id}",
    response_model=Contact,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def replace_contact(
    body: ContactReplace,
    contact_id: str = ContactId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Replace a contact's fields; those left out are cleared.

    409 `contact_email_taken` / `contact_external_id_taken` when another
    contact has the email or external id; 422 `egress_denied` as on create.
    """
    service.check_push_targets(settings.egress_policy(), body.push_targets)
    fields = {**body.model_dump(), "push_targets": _sealed(settings, principal, body.push_targets)}
    with db.transaction() as conn:
        return service.replace_contact(conn, principal.tenant_id, contact_id, fields, now)


@router.patch(
    "/{contact_id}",
    response_model=Contact,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def patch_contact(
    body: ContactPatch = Body(
        ..., media_type="application/merge-patch+json", description="the fields to change"
    ),
    contact_id: str = ContactId,
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Change some fields of a contact (a JSON merge patch, RFC 7396).

    Given fields change, `null` clears one, `attributes` merge key by key (a key
    set to null is removed). Sent as `application/json` or
    `application/merge-patch+json`. 422 `egress_denied` as on create.
    """
    service.check_push_targets(settings.egress_policy(), body.push_targets)
    fields = body.model_dump(exclude_unset=True)
    if "push_targets" in fields:
        fields["push_targets"] = _sealed(settings, principal, body.push_targets)
    with db.transaction() as conn:
        return service.patch_contact(conn, principal.tenant_id, contact_id, fields, now)


def _sealed(settings: Settings, principal: Principal, given: list[str] | None) -> Any:
    """The push targets sealed for storage (outside the transaction: it parses and encrypts)."""
    return service.prepare_targets(settings.vault(), principal.tenant_id, given)


@router.delete(
    "/{contact_id}",
    status_code=204,
    response_class=Response,
    responses={
        200: {"description": "with `erase=true`: what was erased", "model": ContactErasure},
        204: {"description": "the contact is deleted"},
        **problem_responses(401, 403, 404),
    },
)
def delete_contact(
    request: Request,
    contact_id: str = ContactId,
    erase: bool = Query(
        False,
        description="also erase the person everywhere: cancel their unfinished runs and "
        "replace their email, external id and identity values in every linked row with "
        "`[erased]` (needs `runs:write` too); answers 200 with counts",
    ),
    principal: Principal = Depends(_WRITE),
    db: Database = Depends(get_db),
) -> Response:
    """Delete a contact. Its events stay (without the link); its runs keep its id.

    With `erase=true` the person is erased (GDPR/CCPA): their unfinished runs
    are cancelled (reason `erasure`), then every occurrence of their email,
    external id, identity values and push targets in their runs, steps,
    attempts, history, waits, messages, events, dry-run results and simulated
    runs, and in the tenant's idempotency records, dry runs and bulk
    operations, becomes `[erased]`; each of their runs gains a `run.erased`
    history line; the contact is deleted last. Ids and counts remain. Needs
    `runs:write` besides `contacts:write`, as it cancels and rewrites runs.
    Answers 200 with what was done (`ContactErasure`).
    """
    if not erase:
        with db.transaction() as conn:
            service.delete_contact(conn, principal.tenant_id, contact_id)
        return Response(status_code=204)
    if not principal.has(Scope.RUNS_WRITE):
        raise Forbidden(
            f"erasing a contact cancels and rewrites its runs: this API key lacks the scope "
            f"`{Scope.RUNS_WRITE.value}`"
        )
    report = erasure.erase_contact(
        db,
        principal.tenant_id,
        contact_id,
        actor=actor_of(principal),
        clock=request.app.state.clock.now,
    )
    return SafeJSONResponse(ContactErasure(**report.as_dict()).model_dump(mode="json"))
