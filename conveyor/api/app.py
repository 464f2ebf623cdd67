"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from conveyor.api import compat, docs_pages, openapi
from conveyor.api import metrics as api_metrics
from conveyor.api.errors import register_error_handlers
from conveyor.api.idempotency import IdempotencyKeys
from conveyor.api.key_usage import KeyUsage
from conveyor.api.middleware import BodySizeLimit, ForwardedHeaders
from conveyor.api.ratelimit import RateLimits
from conveyor.api.request_log import RequestLog
from conveyor.api.routers import (
    audit,
    automations,
    batch_triggers,
    channel_settings,
    contacts,
    dry_run_results,
    dry_runs,
    events,
    health,
    keys,
    messages,
    run_control,
    run_events,
    runs,
    session,
    templates,
)
from conveyor.api.stream_hub import StreamCaps, StreamHub
from conveyor.api.streams import StreamSettings, stream_settings
from conveyor.api.trigger_groups import TriggerGroups
from conveyor.clock import Clock, SystemClock
from conveyor.services.principals import PrincipalCache
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.web import app as web

LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# Every router of the API, in the order they are matched (`/runs/stream` before `/runs/{id}`).
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    session.router,
    automations.router,
    batch_triggers.router,
    run_control.bulk_router,
    run_events.router,
    runs.router,
    run_control.router,
    keys.router,
    audit.router,
    contacts.router,
    events.router,
    templates.router,
    messages.router,
    channel_settings.router,
    dry_run_results.router,
    dry_runs.router,
)

DESCRIPTION = """\
The Conveyor HTTP API: automation definitions, runs, and API keys.

Authenticate with an API key as `Authorization: Bearer <key>`, `X-API-Key: <key>`
or the `conveyor_token` cookie (set by `POST /api/v1/session`; writes with it also
need `X-CSRF-Token`). Each operation needs one scope. Request bodies are JSON.
Every error is `application/problem+json` with a stable `code`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    lifespan_hooks: list[LifespanHook] | None = None,
) -> FastAPI:
    """Build the application.

    Args:
        settings: configuration; read from ``CONVEYOR_*`` variables when omitted.
        db: the database; made from ``settings.database_url`` when omitted (and
            then disposed of at shutdown).
        clock: the time source for request timestamps (tests pass a fake one).
        lifespan_hooks: async context managers entered at startup and exited at
            shutdown, in reverse order; ``conveyor dev`` runs its worker in one.
    """
    settings = settings or Settings()
    settings.apply_limits()
    owns_db = db is None
    database = db if db is not None else settings.service_database()
    hooks = list(lifespan_hooks or ())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if owns_db:
                stack.callback(database.dispose)
            for hook in hooks:
                await stack.enter_async_context(hook(app))
            usage = asyncio.create_task(app.state.key_usage.run())
            try:
                yield
            finally:
                usage.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await usage

    app = FastAPI(
        title="Conveyor",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets by docs_pages
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.db = database
    app.state.clock = clock or SystemClock()
    app.state.allowed_methods = allowed_methods
    app.state.streams = StreamSettings()
    app.state.rate_limits = RateLimits.of(
        settings.rate_limit, settings.rate_limit_burst, settings.auth_failure_limit
    )
    app.state.key_usage = KeyUsage(database)
    app.state.principals = PrincipalCache(settings.auth_cache_seconds)
    app.state.trigger_groups = TriggerGroups(database, app.state.clock)
    app.state.stream_hub = StreamHub(
        database,
        StreamCaps(settings.max_streams_per_key, settings.max_streams_per_tenant),
        lambda: stream_settings(app),
    )
    register_error_handlers(app)
    app.add_middleware(api_metrics.RouteSeen)  # innermost: sees the matched route
    # Added first, so it runs inside BodySizeLimit: an oversized body is 413
    # before any idempotency record is written.
    app.add_middleware(
        IdempotencyKeys, db=database, clock=app.state.clock, principals=app.state.principals
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost of ours: everything inside sees the browser's scheme, host and address.
    app.add_middleware(ForwardedHeaders, trusted=settings.proxy_networks())
    # Outermost: the seed adapters' paths get even these answers in their own shape.
    app.add_middleware(compat.SeedErrors)
    app.add_middleware(api_metrics.HttpMetrics)  # counts every answer but the access log's own
    # Outermost of all: every answer carries X-Request-ID and every line its id.
    app.add_middleware(RequestLog, access_log=settings.access_log)
    for router in ROUTERS:
        app.include_router(router)
    compat.mount(app)  # the seed documents' own APIs, kept out of /openapi.json
    docs_pages.mount(app)
    web.mount(app)  # the dashboard: `/` and `/ui/…` (conveyor.web)
    api_metrics.mount(app, database, app.state.clock)  # /metrics, kept out of /openapi.json
    app.openapi = lambda: openapi.build(app, ROUTERS)  # type: ignore[method-assign]
    return app


def allowed_methods(path: str) -> set[str]:
    """Every method some route accepts at ``path`` (for the ``Allow`` header of a 405)."""
    methods: set[str] = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(path):
                methods |= route.methods or set()
    return methods
