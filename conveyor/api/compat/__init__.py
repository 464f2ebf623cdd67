"""The seed documents' own APIs, served to their clients by thin adapters.

Conveyor's requirements come from four products' API documents
(`/work/shared/seeds/`, mapped element by element in docs/seeds.md). Each
adapter module serves one document's paths, names, envelopes, errors and auth
carriers over the same services as `/api/v1`: it translates, and has no
behaviour of its own. Each module has:

- ``router``: its routes, kept out of `/openapi.json`;
- ``TITLE``: the document's name, for its own schema at `/seeds/<NNN>/openapi.json`;
- ``PREFIXES`` and ``from_problem``: the paths it answers under, and how a
  problem+json body becomes its error. Its routes answer errors in its shape
  themselves; ``SeedErrors`` does it for the answers made before a route runs
  (a body over the size limit, an idempotency conflict, a wrong method).
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.compat import seed000, seed001, seed002, seed003
from conveyor.api.errors import PROBLEM_JSON

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


_REPLACED = (b"content-type", b"content-length")


def seed_at(path: str) -> ModuleType | None:
    """The adapter that answers at ``path``, if any."""
    for seed in SEEDS.values():
        if any(path == p or path.startswith(p + "/") for p in seed.PREFIXES):
            return seed
    return None


class SeedErrors:
    """Problem+json answers on a seed adapter's paths, rewritten in that seed's shape.

    Outermost of the app's middleware, so it also sees the answers of the body
    size limit and of the Idempotency-Key layer. Anything else passes untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; hold and rewrite a problem+json answer on a seed path."""
        seed = seed_at(scope["path"]) if scope["type"] == "http" else None
        if seed is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(PROBLEM_JSON.encode()):
                    start = message
                    return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            raw = b"".join(chunks)
            try:
                raw = json.dumps(seed.from_problem(start["status"], json.loads(raw))).encode()
            except ValueError:  # not JSON after all: sent as it came
                await send(start)
                await send({"type": "http.response.body", "body": raw})
                return
            kept = [(k, v) for k, v in start.get("headers") or [] if k.lower() not in _REPLACED]
            kept.append((b"content-type", b"application/json"))
            kept.append((b"content-length", str(len(raw)).encode()))
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": raw})

        await self.app(scope, receive, rewrite)
