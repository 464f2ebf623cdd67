"""The API's reference pages, `/docs` (Swagger UI) and `/redoc`, from packaged assets.

Both viewers are shipped in ``conveyor/api/static`` (``make docs-assets``
fetches the pinned versions from npm) instead of FastAPI's CDN links: an
operator's host is often offline or firewalled, and a page that loads
third-party script at run time would be a way in.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def mount(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve `/docs`, `/redoc` and their assets on ``app`` (not part of the API's schema)."""
    app.mount(ASSETS, StaticFiles(packages=[("conveyor.api", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API reference",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        )
