"""Templates, security headers and links for the dashboard's pages.

Everything a page shows is tenant-controlled (payloads, outputs, errors,
email bodies), so templates autoescape everything and pages carry a strict
Content-Security-Policy: no inline script or style runs, even if some markup
got through. Widths (the waterfall) are SVG attributes, not ``style``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from conveyor.settings import Settings

CSP = "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show a tenant's data: no shared cache may keep them.
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=PackageLoader("conveyor.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def prefix(request: Request) -> str:
    """The path every dashboard link starts with: ``CONVEYOR_PUBLIC_URL``'s, else the root path.

    Behind a proxy that serves Conveyor under ``/conveyor``, links must
    carry that prefix, which only the public URL or the ASGI root path know.
    """
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return urlsplit(settings.public_url).path.rstrip("/")
    return str(request.scope.get("root_path", "")).rstrip("/")


def permalink(request: Request, path: str) -> str:
    """The absolute URL of a dashboard path, as a browser outside the proxy reaches it."""
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/") + path
    return str(request.base_url).rstrip("/") + path


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` as a page with the security headers."""
    context.setdefault("principal", None)
    html = _env.get_template(template).render(request=request, prefix=prefix(request), **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(request: Request, path: str) -> RedirectResponse:
    """A 303 to a dashboard path (under the prefix)."""
    return RedirectResponse(prefix(request) + path, status_code=303, headers=SECURITY_HEADERS)


def _when(value: str | datetime | None) -> str:
    """A time as the pages show it: UTC, to the second (``2026-12-02 16:41:19Z``)."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 4 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _pretty(value: Any) -> str:
    """JSON, indented, for a ``<pre>`` (autoescaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _identity(value: Any) -> str:
    """A run's identity as one line (``email: a@example.com``)."""
    if isinstance(value, dict) and "value" in value:
        return f"{value.get('type', 'identity')}: {value['value']}"
    return "—" if value is None else str(value)


# Put before an email's HTML in its sandboxed frame: nothing it names is fetched
# (a tracking pixel would tell the sender who read the run page, and when).
MAIL_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _mail_srcdoc(html: str) -> str:
    """An email's HTML for ``<iframe sandbox srcdoc>``, fetching nothing (the page escapes it)."""
    return f'<meta http-equiv="Content-Security-Policy" content="{MAIL_CSP}">{html}'


_env.filters.update(
    when=_when, duration=_duration, pretty=_pretty, identity=_identity, mail_srcdoc=_mail_srcdoc
)
