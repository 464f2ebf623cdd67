"""Authentication and scopes.

A key is read from ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or
the dashboard's ``conveyor_token`` cookie, in that order. The security
schemes are declared so OpenAPI clients know all three. An unsafe request
authenticated by the cookie must also pass the CSRF check (``conveyor.api.csrf``).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from conveyor import logs
from conveyor.api.csrf import CSRF_COOKIE, CSRF_HEADER, SAFE_METHODS, check_csrf
from conveyor.api.ratelimit import RateLimits
from conveyor.domain.errors import Unauthenticated
from conveyor.domain.scopes import Scope
from conveyor.domain.sessions import SESSION_COOKIE
from conveyor.services.keys import Principal, check_scope
from conveyor.services.principals import PrincipalCache

COOKIE_NAME = SESSION_COOKIE

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")
_cookie = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description=(
        "the dashboard's session cookie, set by `POST /api/v1/session`; a POST, PUT, "
        f"PATCH or DELETE with it must also send `{CSRF_HEADER}` (the `{CSRF_COOKIE}` "
        "cookie's value) and come from this server's origin (403 `csrf_failed`)"
    ),
)


async def cookie_csrf(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
    cookie: str | None = Depends(_cookie),
) -> None:
    """Check CSRF on an unsafe request whose key is the session cookie (403 ``csrf_failed``).

    Checked before the key is looked up: a forged request costs no database
    read and does not count as the key's use.
    """
    if cookie and not (bearer or header) and request.method not in SAFE_METHODS:
        await check_csrf(request)


async def current_principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
    cookie: str | None = Depends(_cookie),
) -> Principal:
    """The caller's API key; 401 when it is missing, unknown, expired or revoked.

    ``cookie_csrf`` first (called here rather than declared as a dependency:
    every authenticated request pays for each dependency FastAPI solves).

    Every authenticated request takes one from its key's rate limit, and every
    failed one counts against its client address (``conveyor.api.ratelimit``).
    A key this process read a moment ago is taken from its cache on the event
    loop; only a miss costs a thread hop and a database read.
    """
    await cookie_csrf(request, bearer, header, cookie)
    token = (bearer.credentials if bearer else None) or header or cookie
    if token:
        state = request.app.state
        state.rate_limits.check_client(client_address(request))
        now = state.clock.now()
        principals: PrincipalCache = state.principals
        principal = principals.cached(token, now)
        if principal is not None:
            return _admit(request, principal, now)
    return await anyio.to_thread.run_sync(authenticate_request, request, token)


def authenticate_request(request: Request, token: str | None) -> Principal:
    """The principal of ``token``, under the rate limits; 401 when there is none.

    A failure counts against the client's address; once the address is over
    its limit, it is refused (429) before the key is even looked up.
    """
    limits: RateLimits = request.app.state.rate_limits
    client = client_address(request)
    limits.check_client(client)  # before the look-up: bogus keys cost no database read
    if not token:
        limits.failed(client)
        raise Unauthenticated(
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    state = request.app.state
    now = state.clock.now()
    principals: PrincipalCache = state.principals
    principal = principals.authenticate(state.db, token, now)
    if principal is None:
        limits.failed(client)
        raise Unauthenticated("the API key is invalid, expired or revoked")
    return _admit(request, principal, now)


def _admit(request: Request, principal: Principal, now: datetime) -> Principal:
    """Charge the key's rate limit and note its use and tenant; return it."""
    request.app.state.rate_limits.charge(principal.key_id)
    request.app.state.key_usage.used(principal, now)
    request.state.principal = principal
    logs.note(tenant_id=principal.tenant_id)  # every later line of the request, and its access line
    return principal


def client_address(request: Request) -> str:
    """The address the request came from (a trusted proxy's client, see ``ForwardedHeaders``)."""
    return request.client.host if request.client else "unknown"


class ScopeRequirement:
    """A dependency that lets the request through only if its key holds ``scope``."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        header: str | None = Depends(_header),
        cookie: str | None = Depends(_cookie),
    ) -> Principal:
        """The caller's key (``current_principal``); 403 naming the scope when it lacks it.

        ``current_principal`` is called, not declared: one dependency fewer for
        FastAPI to solve on every request of a scoped route.
        """
        principal = await current_principal(request, bearer, header, cookie)
        check_scope(principal, self.scope)
        return principal

    async def of(self, request: Request) -> Principal:
        """What the dependency gives, for a handler that reads the request itself (``fast_path``).

        The credentials are read by the same security schemes FastAPI calls.
        """
        bearer = await _bearer(request)
        return await self(request, bearer, await _header(request), await _cookie(request))

    def __repr__(self) -> str:
        return f"require({self.scope.value!r})"


@cache
def require(scope: Scope) -> ScopeRequirement:
    """The dependency for ``scope``: ``principal: Principal = Depends(require(Scope.X))``."""
    return ScopeRequirement(scope)
