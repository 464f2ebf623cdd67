"""Who is looking at a page: the API key in the session cookie, checked like the API checks it.

A page authenticates the ``conveyor_token`` cookie ``POST /api/v1/session``
set, under the same rate limits as an API request (the application's
``rate_limits`` and ``key_usage``, reached through ``app.state`` so the
dashboard never imports ``api/``). Pages are GETs only, so no CSRF check is
due here; every write goes through ``/api/v1`` and its CSRF check.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse

from conveyor.domain.sessions import SESSION_COOKIE
from conveyor.services.keys import Principal
from conveyor.services.principals import PrincipalCache
from conveyor.web.rendering import redirect


def page_principal(request: Request) -> Principal | None:
    """The signed-in key, or None when the cookie is missing, invalid, expired or revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    state: Any = request.app.state
    client = request.client.host if request.client else "unknown"
    state.rate_limits.check_client(client)  # a flood of bad cookies costs no database read
    now = state.clock.now()
    principals: PrincipalCache = state.principals
    principal = principals.authenticate(state.db, token, now)
    if principal is None:
        state.rate_limits.failed(client)
        return None
    state.rate_limits.charge(principal.key_id)
    state.key_usage.used(principal, now)
    return principal


def to_login(request: Request) -> RedirectResponse:
    """Send the browser to the login page, to come back to this page afterwards."""
    here = request.url.path
    root = str(request.scope.get("root_path", ""))
    if root and here.startswith(root):
        here = here[len(root) :]
    if request.url.query:
        here += "?" + request.url.query
    return redirect(request, "/ui/login?next=" + quote(here, safe=""))
