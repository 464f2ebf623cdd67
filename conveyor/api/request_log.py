"""The request id and the access line of every HTTP request (pure ASGI middleware)."""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import logs
from conveyor.domain.ids import new_id

access = logging.getLogger("conveyor.access")

HEADER = b"x-request-id"
# What a client's own request id may be: a proxy's or a tracer's id, never a
# place to smuggle text into a log line (no spaces, quotes, newlines; bounded).
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if it is safe to log, else a new id."""
    for name, value in headers:
        if name == HEADER:
            if _SAFE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_id()


class RequestLog:
    """Give each request an id, bind it to its log lines, answer it, and log one access line.

    The id is the client's ``X-Request-ID`` when it is safe, otherwise a new
    one; the response carries it back in ``X-Request-ID``. The access line
    (``conveyor.access``, unless ``CONVEYOR_ACCESS_LOG=false``) is written when
    the response has been sent (a live stream's when it closes): method, path
    (no query string, which may carry what should not be logged), status,
    duration in milliseconds, and, through the request's log fields, the
    request id and the tenant once the caller authenticated.
    """

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        token = logs.request_scope({"request_id": request_id})
        echoed = (HEADER, request_id.encode("ascii"))
        status = 500  # if the app raised before it started a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                elapsed = (time.perf_counter() - started) * 1000
                path = _path_of(scope)
                access.info(
                    "%s %s %d",
                    scope["method"],
                    path,
                    status,
                    extra={
                        "data": {
                            "method": scope["method"],
                            "path": path,
                            "status": status,
                            "duration_ms": round(elapsed, 2),
                        }
                    },
                )
            logs.end_request_scope(token)


def _path_of(scope: Scope) -> str:
    """The path as the client sent it, still percent-encoded.

    The decoded ``path`` may hold a newline (``%0A``) that would forge a line
    in the console format; the raw one cannot (an HTTP request line has none).
    """
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("ascii", "backslashreplace")
    return str(scope["path"]).encode("unicode_escape").decode("ascii")
