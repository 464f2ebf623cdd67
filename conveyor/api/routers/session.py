"""``/api/v1/session``: sign a browser in with an API key (cookies), and out again.

Signing in sets two cookies: ``conveyor_token``, the key itself (HttpOnly, so
no script can read it), and ``conveyor_csrf``, a random value scripts read
and send back as ``X-CSRF-Token`` (``conveyor.api.csrf``). Both are
``SameSite=Lax; Path=/``, and ``Secure`` when the browser came over HTTPS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from conveyor.api.auth import COOKIE_NAME, authenticate_request, cookie_csrf
from conveyor.api.csrf import CSRF_COOKIE, check_origin, is_secure, new_csrf_token
from conveyor.api.errors import problem_responses
from conveyor.api.routing import (
    FORM,
    HygienicRoute,
    accepts_form,
    form_fields,
    is_form,
    strict_json,
)
from conveyor.api.schemas.sessions import Session, SessionCreate
from conveyor.domain.scopes import sort_scopes

router = APIRouter(prefix="/api/v1/session", tags=["session"], route_class=HygienicRoute)

_BODY_SCHEMA = SessionCreate.model_json_schema()
_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _BODY_SCHEMA}, FORM: {"schema": _BODY_SCHEMA}},
}


async def _credentials(request: Request) -> SessionCreate:
    """The key to sign in with, from a same-origin JSON or form body."""
    # Before anything else: another site must not sign a browser in with its own key.
    check_origin(request)
    data: Any
    if is_form(request.headers.get("content-type")):
        # Other fields (a submit button's name, say) are the page's business; a
        # blank one is as good as missing.
        fields = await form_fields(request)
        data = {name: value for name, value in fields if name == "api_key" and value}
    else:
        data = await strict_json(request)
    try:
        return SessionCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None


@router.post(
    "",
    response_model=Session,
    responses=problem_responses(400, 401, 403, 413, 415, 422),
    openapi_extra={"requestBody": _REQUEST_BODY},
)
@accepts_form
def create_session(
    request: Request,
    response: Response,
    credentials: SessionCreate = Depends(_credentials),
) -> dict[str, Any]:
    """Sign in with an API key: set the session cookies a browser then authenticates with.

    The body is JSON or an URL-encoded form (`api_key=cvk_...`), and the
    request must come from this server's origin (`Origin`, else `Referer`;
    403 `csrf_failed`). An invalid key is 401 and sets nothing; failed sign-ins
    count against the client address like any failed authentication. Sets
    `conveyor_token` (the key; HttpOnly) and `conveyor_csrf` (a new random
    value, also in the answer), both `SameSite=Lax; Path=/`, `Secure` over
    HTTPS. Writes authenticated by the cookie must send `conveyor_csrf`'s
    value as `X-CSRF-Token`.
    """
    principal = authenticate_request(request, credentials.api_key)
    csrf = new_csrf_token()
    secure = is_secure(request)
    response.set_cookie(
        COOKIE_NAME, credentials.api_key, path="/", secure=secure, httponly=True, samesite="lax"
    )
    response.set_cookie(CSRF_COOKIE, csrf, path="/", secure=secure, httponly=False, samesite="lax")
    # Neither a cache nor the Idempotency-Key store may keep an answer that sets the key.
    response.headers["Cache-Control"] = "no-store"
    return {
        "tenant_id": principal.tenant_id,
        "key_id": principal.key_id,
        "label": principal.label,
        "scopes": sort_scopes(principal.scopes),
        "csrf_token": csrf,
    }


@router.delete(
    "",
    status_code=204,
    response_class=Response,
    responses=problem_responses(403),
    dependencies=[Depends(cookie_csrf)],
)
def delete_session(request: Request) -> Response:
    """Sign out: clear both session cookies. Needs no valid key; 204 even without a session.

    With the session cookie, the request passes the same CSRF check as any
    write (403 `csrf_failed`), so another site cannot sign a browser out.
    """
    response = Response(status_code=204)
    secure = is_secure(request)
    response.delete_cookie(COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="lax")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, httponly=False, samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    return response
