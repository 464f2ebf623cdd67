"""A worker's own ``/metrics`` (``conveyor worker --metrics-port``), on a thread.

The same rules as ``conveyor serve``'s ``/metrics``: the bearer token when
``CONVEYOR_METRICS_TOKEN`` is set, else loopback clients only. It answers
only ``GET /metrics``; nothing else of the worker is reachable through it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from conveyor import metrics
from conveyor.metrics.access import refusal

if TYPE_CHECKING:
    from conveyor.settings import Settings

_DETAIL = {
    401: (
        "metrics_unauthorized",
        "/metrics needs `Authorization: Bearer` with CONVEYOR_METRICS_TOKEN",
    ),
    403: (
        "metrics_forbidden",
        "/metrics answers loopback clients only (set CONVEYOR_METRICS_TOKEN)",
    ),
    404: ("not_found", "only /metrics is served here"),
}


class _Handler(BaseHTTPRequestHandler):
    token: str | None = None

    def do_GET(self) -> None:
        """Answer a scrape."""
        if self.path != "/metrics":
            self._problem(404)
            return
        status = refusal(self.token, self.headers.get("Authorization"), self.client_address[0])
        if status is not None:
            self._problem(status)
            return
        body = metrics.exposition()
        self.send_response(200)
        self.send_header("Content-Type", metrics.CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, status: int) -> None:
        code, detail = _DETAIL[status]
        body = json.dumps(
            {
                "type": f"urn:conveyor:problem:{code}",
                "status": status,
                "title": self.responses[status][0],
                "detail": detail,
                "code": code,
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def start(host: str, port: int, token: str | None) -> ThreadingHTTPServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; ``shutdown()`` stops it."""
    handler = type("Handler", (_Handler,), {"token": token})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server


def start_for(settings: Settings) -> ThreadingHTTPServer | None:
    """The worker's ``/metrics`` server as ``settings`` ask (None: no port set)."""
    if settings.worker_metrics_port is None:
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return start(settings.worker_metrics_host, settings.worker_metrics_port, token)


def stop(server: ThreadingHTTPServer | None) -> None:
    """Stop serving, and drop this process's live gauges from the multiprocess directory."""
    if server is not None:
        server.shutdown()
        server.server_close()
    metrics.process_exited()
