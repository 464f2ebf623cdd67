"""The seed documents' own APIs, served to their clients by thin adapters.

Conveyor's requirements come from four products' API documents
(`/work/shared/seeds/`, mapped element by element in docs/seeds.md). Each
adapter module serves one document's paths, names, envelopes, errors and auth
carriers over the same services as `/api/v1`: it translates, and has no
behaviour of its own. Each module has:

- ``router``: its routes, kept out of `/openapi.json`;
- ``TITLE``: the document's name, for its own schema at `/seeds/<NNN>/openapi.json`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from conveyor.api.compat import seed000, seed001, seed002, seed003

SEEDS: dict[str, ModuleType] = {"000": seed000, "001": seed001, "002": seed002, "003": seed003}

router = APIRouter(tags=["seeds"])


def mount(app: FastAPI) -> None:
    """Serve every adapter, and each one's schema, on ``app``."""
    for seed in SEEDS.values():
        app.include_router(seed.router)
    app.include_router(router)


def seed_openapi(number: str) -> dict[str, Any]:
    """The OpenAPI document of one adapter (its routes only)."""
    seed = SEEDS[number]
    return get_openapi(
        title=f"Conveyor: {seed.TITLE}",
        version="1",
        description=seed.__doc__ or "",
        routes=seed.router.routes,
    )


@router.get("/seeds/{number}/openapi.json", include_in_schema=False)
def openapi_of_seed(number: str, request: Request) -> JSONResponse:
    """One adapter's OpenAPI document; 404 for a seed without an adapter."""
    if number not in SEEDS:
        return JSONResponse({"detail": f"no adapter for seed {number}"}, status_code=404)
    cache: dict[str, dict[str, Any]] = request.app.state.__dict__.setdefault("seed_openapi", {})
    if number not in cache:
        cache[number] = seed_openapi(number)
    return JSONResponse(cache[number])
