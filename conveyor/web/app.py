"""Mount the dashboard on the application: its pages and its static files."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles

from conveyor.web import login, run_page, runs_list

STATIC = "/ui/static"


def mount(app: FastAPI) -> None:
    """Serve ``/``, the ``/ui/…`` pages and ``/ui/static`` (none of them in the API's schema)."""
    app.mount(STATIC, StaticFiles(packages=[("conveyor.web", "static")]), name="ui-static")
    for router in (login.router, runs_list.router, run_page.router):
        app.include_router(router)
    icon = (files("conveyor.web") / "static" / "favicon.svg").read_bytes()

    # Browsers ask every origin for /favicon.ico (even on an API answer): a 404 there
    # would be an error in the console of any page showing one.
    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(
            icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )
