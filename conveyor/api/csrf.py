"""CSRF protection of cookie-authenticated requests.

A browser sends the ``conveyor_token`` cookie with requests other sites make
it send (an HTML form posted from another origin, for one), so a request
authenticated by the cookie alone proves nothing about who wrote it. An
unsafe one (anything but GET, HEAD, OPTIONS, TRACE) must therefore carry:

- the ``conveyor_csrf`` cookie's value again, in the ``X-CSRF-Token`` header
  or the form field ``csrf_token``: another site can make the browser send
  the cookie but cannot read it (double submit);
- an ``Origin`` (else a ``Referer``) equal to this server's origin:
  ``CONVEYOR_PUBLIC_URL``'s when set, else the request's own scheme and host
  (as trusted proxies report them, ``conveyor.api.middleware``).

Otherwise the answer is 403 ``csrf_failed`` and nothing is done. Requests
with ``Authorization: Bearer`` or ``X-API-Key`` are not checked: a browser
never adds those on its own. Logging in checks the origin too (login CSRF
would sign the victim in with the attacker's key).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

from conveyor.api.routing import form_fields
from conveyor.domain.errors import Forbidden
from conveyor.domain.origins import origin_of
from conveyor.domain.sessions import CSRF_COOKIE as CSRF_COOKIE  # re-exported for api/
from conveyor.domain.sessions import CSRF_HEADER as CSRF_HEADER
from conveyor.settings import Settings

CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CsrfFailed(Forbidden):
    """A cookie-authenticated request failed the CSRF check."""

    code = "csrf_failed"


def new_csrf_token() -> str:
    """A fresh value for the ``conveyor_csrf`` cookie."""
    return secrets.token_urlsafe(32)


def server_origin(request: Request) -> str | None:
    """The origin browsers use for this server: ``CONVEYOR_PUBLIC_URL``'s, else the request's."""
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return origin_of(settings.public_url)
    return origin_of(str(request.base_url))


def is_secure(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (so cookies get ``Secure``)."""
    settings: Settings = request.app.state.settings
    public = origin_of(settings.public_url) if settings.public_url else None
    return request.url.scheme == "https" or (public or "").startswith("https:")


def check_origin(request: Request) -> None:
    """Refuse a request whose ``Origin`` (else ``Referer``) is not this server's.

    Raises:
        CsrfFailed: neither header, ``Origin: null``, or another origin.
    """
    origin = request.headers.get("origin")
    sent = origin if origin is not None else request.headers.get("referer")
    expected = server_origin(request)
    if sent is None:
        raise CsrfFailed("a request with the session cookie must carry an Origin or Referer header")
    if expected is None or origin_of(sent) != expected:
        raise CsrfFailed(f"the request does not come from this server's origin ({expected})")


async def check_csrf(request: Request) -> None:
    """Refuse a cookie-authenticated request without the CSRF token or from another origin.

    Raises:
        CsrfFailed: the token is missing or does not match ``conveyor_csrf``,
            or the origin is not this server's.
    """
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER) or await _form_token(request)
    if not sent:
        raise CsrfFailed(
            f"a request with the session cookie must send the `{CSRF_COOKIE}` cookie's value "
            f"as `{CSRF_HEADER}` (or the form field `{CSRF_FIELD}`)"
        )
    # Bytes: compare_digest takes str only when it is ASCII, and a header may not be.
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfFailed(f"the `{CSRF_HEADER}` does not match the `{CSRF_COOKIE}` cookie")
    check_origin(request)


async def _form_token(request: Request) -> str | None:
    """The ``csrf_token`` field of an URL-encoded form body (what HTML forms send)."""
    return next((value for name, value in await form_fields(request) if name == CSRF_FIELD), None)
