"""``/`` and ``/ui/login``: where a browser lands, and the sign-in page.

The sign-in form is sent by the page's script to ``POST /api/v1/session``
(issue 8's session: the cookie and the CSRF token); signing out is its
``DELETE``. Both are API operations, so they are not repeated here.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from conveyor.web.auth import page_principal
from conveyor.web.rendering import redirect, render

router = APIRouter(include_in_schema=False)

HOME = "/ui/runs"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if value and value.startswith("/ui/") and not value.startswith("/ui//") and "\\" not in value:
        return value
    return HOME


@router.get("/")
def home(request: Request) -> RedirectResponse:
    """The dashboard's runs list, or the sign-in page when no one is signed in."""
    return redirect(request, HOME if page_principal(request) else "/ui/login")


@router.get("/ui")
@router.get("/ui/")
def ui_home(request: Request) -> RedirectResponse:
    """``/ui`` is the runs list too."""
    return home(request)


@router.get("/ui/login", response_model=None)
def login_page(
    request: Request, next: str | None = Query(None, max_length=2000)
) -> HTMLResponse | RedirectResponse:
    """The sign-in form (an API key); straight on when already signed in."""
    target = safe_next(next)
    if page_principal(request) is not None:
        return redirect(request, target)
    return render(request, "login.html", title="Sign in", next=target)
