"""The ``Idempotency-Key`` header on every POST, as pure ASGI middleware.

A POST carrying the header is run at most once per (API key, header value)
within a day: a repeat gets the first response again (same status, body and headers,
plus ``Idempotent-Replayed: true``); the same key on a different request
(method, path, query or body) is 422 ``idempotency_key_reused``; a repeat
while the first is still running is 409 ``idempotency_key_in_flight``.

What is kept: every answer below 500 except those that say nothing about the
request's effect and that a client fixes and retries with the same key (401,
403, 408, 415, 429). A 5xx or an exception drops the record, so the client may
retry. A response marked ``Cache-Control: no-store`` (a created API key,
whose token is shown once) is not kept either: keeping it would store the
secret in plain text for a day, so such a repeat runs again.

The middleware sits inside ``BodySizeLimit``: an oversized body is still 413
before any record is written. Requests without a valid API key are passed
through unrecorded and fail authentication in the route as usual.

Records belong to the API key that made them: another key sending the same
header value is a different request, processed (and scope-checked) on its
own. A replay is only ever the answer the same key got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.auth import COOKIE_NAME
from conveyor.api.errors import problem
from conveyor.clock import Clock
from conveyor.services import idempotency as service
from conveyor.services.keys import Principal
from conveyor.services.principals import PrincipalCache
from conveyor.store.db import Database

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"

# Answers that are about the envelope (who calls, how fast), not the request's
# effect: the client fixes the cause and retries with the same key.
_NOT_KEPT = frozenset({401, 403, 408, 415, 429})
# Headers that belong to one transfer, not to the answer.
_TRANSFER_HEADERS = frozenset(
    {"content-length", "date", "server", "connection", "keep-alive", "transfer-encoding"}
)
T = TypeVar("T")


def _token(headers: Headers) -> str | None:
    """The API key the request carries, looked for in the same order as the routes do."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    return cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME) or None


def _kept(status: int, headers: list[tuple[str, str]]) -> bool:
    if status >= 500 or status in _NOT_KEPT:
        return False
    cache_control = ",".join(v for n, v in headers if n == "cache-control").lower()
    return "no-store" not in cache_control


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the size limit outside bounds it); None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _raw(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


class IdempotencyKeys:
    """Pure ASGI middleware giving every POST an ``Idempotency-Key`` header."""

    def __init__(
        self, app: ASGIApp, db: Database, clock: Clock, principals: PrincipalCache
    ) -> None:
        self.app = app
        self.db = db
        self.clock = clock
        self.principals = principals

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        # The store is synchronous: keep its round trips off the event loop.
        return await anyio.to_thread.run_sync(fn, *args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        token = _token(headers)
        if key is None or token is None:
            await self.app(scope, receive, send)
            return
        principal = await self._db(self._authenticate, token)
        if principal is None:  # the route answers 401; nothing to record
            await self.app(scope, receive, send)
            return
        reason = service.check_key(key)
        if reason is not None:
            await _invalid_key(reason)(scope, receive, send)
            return
        # Read the body before anything is recorded: over the limit, this raises
        # the 413 that BodySizeLimit (outside) answers.
        body = await _read_body(receive)
        if body is None:  # nobody to answer, and nothing was done
            return
        fingerprint = service.fingerprint(
            scope["method"],
            scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
            headers.get("content-type", ""),
            body,
        )
        replay_receive = _replaying(body, receive)
        outcome = await self._db(
            self._claim, principal, key, scope["method"], scope["path"], fingerprint
        )
        if isinstance(outcome, service.Claimed):
            await self._run(outcome.record_id, scope, replay_receive, send)
        else:
            await _answer(outcome, key)(scope, replay_receive, send)

    def _authenticate(self, token: str) -> Principal | None:
        return self.principals.authenticate(self.db, token, self.clock.now())

    def _claim(
        self, principal: Principal, key: str, method: str, path: str, fingerprint: str
    ) -> service.Claim:
        with self.db.transaction() as conn:
            return service.claim(
                conn,
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                key=key,
                method=method,
                path=path,
                body_hash=fingerprint,
                now=self.clock.now(),
            )

    def _finish(
        self, record_id: str, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        with self.db.transaction() as conn:
            service.finish(conn, record_id, status=status, headers=headers, body=body)

    def _abandon(self, record_id: str) -> None:
        with self.db.transaction() as conn:
            service.abandon(conn, record_id)

    async def _release(self, record_id: str) -> None:
        """Drop the record, even while the request is being cancelled."""
        with anyio.CancelScope(shield=True):
            try:
                await self._db(self._abandon, record_id)
            except Exception:
                log.exception("could not drop idempotency record %s", record_id)

    async def _run(self, record_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, keep its response, then send it.

        The response is held back until it is stored, so a client that repeats
        the request as soon as it has the answer finds the record complete.
        """
        start: Message | None = None
        chunks: list[bytes] = []
        streaming = False

        async def capture(message: Message) -> None:
            nonlocal start, streaming
            if message["type"] == "http.response.start":
                start = message
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                # A stream cannot be held back or replayed: pass it through.
                streaming = content_type.startswith("text/event-stream")
                if streaming:
                    await send(message)
            elif message["type"] == "http.response.body" and not streaming:
                chunks.append(message.get("body", b""))
            else:
                await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await self._release(record_id)
            raise
        if start is None or streaming:
            await self._release(record_id)
            return
        status = int(start["status"])
        headers = [
            (n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in start.get("headers", [])
        ]
        body = b"".join(chunks)
        kept = [(n, v) for n, v in headers if n not in _TRANSFER_HEADERS]
        if _kept(status, kept):
            try:
                await self._db(self._finish, record_id, status, kept, body)
            except Exception:
                log.exception("could not store idempotency record %s", record_id)
                await self._release(record_id)
        else:
            await self._release(record_id)
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real channel."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _invalid_key(reason: str) -> ASGIApp:
    return problem(
        422,
        "validation_error",
        f"invalid input: header.{HEADER}: {reason}",
        errors=[{"loc": ["header", HEADER], "msg": reason, "type": "value_error"}],
    )


def _answer(outcome: service.Claim, key: str) -> ASGIApp:
    """The response for a request that does not get to run."""
    if isinstance(outcome, service.Replay):
        headers = [
            (n, v)
            for n, v in outcome.headers
            if n not in _TRANSFER_HEADERS and n != REPLAYED.lower()
        ]
        return _Stored(outcome.status, [*headers, (REPLAYED.lower(), "true")], outcome.body)
    if isinstance(outcome, service.Reused):
        return problem(
            422,
            "idempotency_key_reused",
            f"the {HEADER} {key!r} was used with a different request; use a new key",
        )
    return problem(
        409,
        "idempotency_key_in_flight",
        f"a request with the {HEADER} {key!r} is still being processed; retry later",
        headers={"Retry-After": "1"},
    )


class _Stored:
    """An ASGI response made of a stored status, headers and body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = [*headers, ("content-length", str(len(body)))]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": _raw(self.headers)}
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def document(schema: dict[str, Any]) -> None:
    """Declare the header, and the answers it adds, on every POST of an OpenAPI schema."""
    parameter = {
        "name": HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": service.MAX_KEY_LENGTH},
        "description": (
            "makes a retry safe: a repeat within 24 h gets the first response again, "
            f"with `{REPLAYED}: true`"
        ),
    }
    problem_ref = {"$ref": "#/components/schemas/ProblemDetail"}
    for path in schema.get("paths", {}).values():
        operation = path.get("post")
        if operation is None:
            continue
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("in") == "header" and p.get("name") == HEADER for p in parameters):
            parameters.append(parameter)
        responses = operation.setdefault("responses", {})
        responses.setdefault(
            "409",
            {
                "description": "A request with this `Idempotency-Key` is still in flight",
                "content": {"application/problem+json": {"schema": problem_ref}},
            },
        )
