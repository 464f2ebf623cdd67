"""``GET /metrics`` for Prometheus, the HTTP request metrics, and the queue's gauges.

``/metrics`` is an operator's route, not a tenant's: it is kept out of
``/openapi.json`` (like ``/docs``), takes no API key and no query parameter.
With ``CONVEYOR_METRICS_TOKEN`` set it answers only
``Authorization: Bearer <token>`` (compared in constant time); without one,
only loopback clients (the client address after ``ForwardedHeaders``, so a
trusted proxy on the same host does not make every client loopback).

The queue gauges (depth and oldest due task by kind) are read from the
database when a scrape asks, by ``QueueCollector``: at most one bounded query
(``conveyor.store.queue_stats``) per ``QUEUE_TTL`` seconds per process,
however often and by however many Prometheus servers it is scraped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import metrics
from conveyor.api.errors import problem
from conveyor.clock import Clock
from conveyor.metrics import access
from conveyor.store.db import Database
from conveyor.store.queue_stats import due_by_kind

log = logging.getLogger(__name__)

PATH = "/metrics"
# A scrape reads at most this many due tasks (the depth saturates there).
QUEUE_CAP = 10_000
# Seconds a queue reading is reused (several scrapers, or a short interval).
QUEUE_TTL = 5.0
# The route label of a request no route matched (never the raw path).
UNMATCHED = "<unmatched>"
_NO_PARAMS = "unknown query parameter '{}'; /metrics takes no query parameters"
# The gauges QueueCollector makes at each scrape.
QUEUE_DEPTH = "conveyor_queue_depth"
QUEUE_OLDEST_AGE = "conveyor_queue_oldest_due_age_seconds"
QUEUE_CAPPED = "conveyor_queue_depth_capped"
QUEUE_METRICS = (QUEUE_DEPTH, QUEUE_OLDEST_AGE, QUEUE_CAPPED)


class QueueCollector:
    """``conveyor_queue_depth`` and ``conveyor_queue_oldest_due_age_seconds`` by kind."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._families: list[Metric] = []

    def describe(self) -> list[Metric]:
        """Nothing to describe ahead: the families are built per scrape."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The queue as last read, read again if older than ``QUEUE_TTL``."""
        with self._lock:
            if time.monotonic() - self._read_at >= QUEUE_TTL:
                self._families = self._read()
                self._read_at = time.monotonic()
            yield from self._families

    def _read(self) -> list[Metric]:
        now = self.clock.now()
        try:
            with self.db.read() as conn:
                kinds, capped = due_by_kind(conn, now, QUEUE_CAP)
        except SQLAlchemyError as exc:
            # The other metrics are still worth a scrape; the gap says the rest.
            log.warning("metrics: the queue could not be read: %s", type(exc).__name__)
            return []
        depth = GaugeMetricFamily(
            QUEUE_DEPTH,
            f"Due tasks no worker holds, by kind (read at most {QUEUE_CAP} at a scrape).",
            labels=["kind"],
        )
        age = GaugeMetricFamily(
            QUEUE_OLDEST_AGE,
            "How long the oldest due task no worker holds has been due, by kind (0: none).",
            labels=["kind"],
        )
        for kind, due in sorted(kinds.items()):
            depth.add_metric([kind], due.depth)
            age.add_metric([kind], _age(now, due.oldest_due_at))
        saturated = GaugeMetricFamily(
            QUEUE_CAPPED,
            f"1 when the last reading stopped at {QUEUE_CAP} tasks (the depths are lower bounds).",
            value=1 if capped else 0,
        )
        return [depth, age, saturated]


def _age(now: datetime, due_at: datetime | None) -> float:
    return max(0.0, (now - due_at).total_seconds()) if due_at is not None else 0.0


def mount(app: FastAPI, db: Database, clock: Clock) -> None:
    """Serve ``/metrics`` on ``app`` (outside its OpenAPI document)."""
    queue = QueueCollector(db, clock)

    @app.get(PATH, include_in_schema=False)
    async def scrape(request: Request) -> Response:
        token = request.app.state.settings.metrics_token
        secret = token.get_secret_value() if token is not None else None
        client = request.client.host if request.client else None
        refused = access.refusal(secret, request.headers.get("authorization"), client)
        if refused == 401:
            return problem(
                401,
                "metrics_unauthorized",
                "/metrics needs `Authorization: Bearer` with CONVEYOR_METRICS_TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if refused is not None:
            return problem(
                403,
                "metrics_forbidden",
                "/metrics answers loopback clients only (or set CONVEYOR_METRICS_TOKEN)",
            )
        if request.query_params:
            names = list(dict.fromkeys(request.query_params.keys()))
            errors = [
                {"loc": ["query", n], "msg": _NO_PARAMS.format(n), "type": "unknown_parameter"}
                for n in names
            ]
            return problem(422, "validation_error", _NO_PARAMS.format(names[0]), errors=errors)
        # Reading the multiprocess files and the queue blocks: off the event loop.
        body = await run_in_threadpool(metrics.exposition, [queue])
        return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)


# The scope key under which HttpMetrics leaves a holder for the matched route:
# a middleware between the two may copy the scope (ForwardedHeaders does), and
# a copy shares the holder but not the router's later additions.
_SEEN = "conveyor.metrics.route"


class HttpMetrics:
    """ASGI middleware (outermost): count every HTTP request by method, route template, status.

    The route template is what ``RouteSeen`` (innermost) found in the scope
    after routing; a request no route matched is counted as ``<unmatched>``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count it once its answer has been sent (or failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting one
        seen: list[str] = []
        scope[_SEEN] = seen

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = seen[0] if seen else UNMATCHED
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


class RouteSeen:
    """ASGI middleware (innermost): hand the matched route's template to ``HttpMetrics``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; afterwards, note the route the router matched."""
        try:
            await self.app(scope, receive, send)
        finally:
            seen = scope.get(_SEEN)
            path = getattr(scope.get("route"), "path", None)
            if seen is not None and path:
                seen.append(path)
