"""Authentication and scopes.

A key is read from ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or
the dashboard's ``conveyor_token`` cookie, in that order. The security
schemes are declared so OpenAPI clients know all three.
"""

from __future__ import annotations

from functools import cache

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from conveyor.api.ratelimit import RateLimits
from conveyor.domain.errors import Forbidden, Unauthenticated
from conveyor.domain.scopes import Scope
from conveyor.services.keys import Principal, authenticate
from conveyor.store.db import Database

COOKIE_NAME = "conveyor_token"

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")
_cookie = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="the dashboard's cookie")


def current_principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header: str | None = Depends(_header),
    cookie: str | None = Depends(_cookie),
) -> Principal:
    """The caller's API key; 401 when it is missing, unknown, expired or revoked.

    Every authenticated request takes one from its key's rate limit, and every
    failed one counts against its client address (``conveyor.api.ratelimit``).
    """
    token = (bearer.credentials if bearer else None) or header or cookie
    limits: RateLimits = request.app.state.rate_limits
    client = client_address(request)
    limits.check_client(client)  # before the look-up: bogus keys cost no database read
    if not token:
        limits.failed(client)
        raise Unauthenticated(
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    db: Database = request.app.state.db
    now = request.app.state.clock.now()
    with db.read() as conn:
        principal = authenticate(conn, token, now)
    if principal is None:
        limits.failed(client)
        raise Unauthenticated("the API key is invalid, expired or revoked")
    limits.charge(principal.key_id)
    request.app.state.key_usage.used(principal, now)
    request.state.principal = principal
    return principal


def client_address(request: Request) -> str:
    """The address the request came from (the peer's: proxies are not trusted here)."""
    return request.client.host if request.client else "unknown"


class ScopeRequirement:
    """A dependency that lets the request through only if its key holds ``scope``."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, principal: Principal = Depends(current_principal)) -> Principal:
        """Check the scope; 403 naming it when the key lacks it."""
        if not principal.has(self.scope):
            raise Forbidden(f"this API key lacks the scope `{self.scope.value}`")
        return principal

    def __repr__(self) -> str:
        return f"require({self.scope.value!r})"


@cache
def require(scope: Scope) -> ScopeRequirement:
    """The dependency for ``scope``: ``principal: Principal = Depends(require(Scope.X))``."""
    return ScopeRequirement(scope)
