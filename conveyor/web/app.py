"""Mount the dashboard on the application: its pages and its static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from conveyor.web import login, run_page, runs_list

STATIC = "/ui/static"


def mount(app: FastAPI) -> None:
    """Serve ``/``, the ``/ui/…`` pages and ``/ui/static`` (none of them in the API's schema)."""
    app.mount(STATIC, StaticFiles(packages=[("conveyor.web", "static")]), name="ui-static")
    for router in (login.router, runs_list.router, run_page.router):
        app.include_router(router)
