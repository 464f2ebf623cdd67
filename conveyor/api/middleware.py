"""Pure ASGI middleware."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from conveyor.api.errors import problem
from conveyor.domain.egress import IPNetwork


class PayloadTooLarge(HTTPException):
    """The request body is over the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before anything reads them whole.

    A declared ``Content-Length`` over the limit is refused without reading a
    byte. Chunked or under-declared bodies are counted as they stream in: the
    read that crosses the limit raises ``PayloadTooLarge``, an HTTPException,
    which FastAPI lets through its body parsing to the problem+json handler, so
    the endpoint never runs and nothing is stored.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            # Reached only when the app did not turn it into a response itself.
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "payload_too_large",
            PayloadTooLarge(self.max_bytes).detail,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class ForwardedHeaders:
    """Believe ``X-Forwarded-Proto``, ``-Host`` and ``-For`` from trusted proxies only.

    From a peer in ``trusted`` (``CONVEYOR_TRUSTED_PROXIES``), the request
    takes the scheme, ``Host`` and client address the proxy says the browser
    used; from anyone else the headers are ignored. The CSRF origin check,
    the ``Secure`` cookie flag and the per-address limits all read the result.
    Scheme and address are uvicorn's ``ProxyHeadersMiddleware`` (it walks
    ``X-Forwarded-For`` back past every trusted hop); the host is added here.
    The servers Conveyor starts run uvicorn with its own proxy handling off,
    so this is the one place forwarded headers are read.
    """

    def __init__(self, app: ASGIApp, trusted: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        self.forwarded = ProxyHeadersMiddleware(
            app,  # type: ignore[arg-type]  # uvicorn's ASGI types are its own, the same protocol
            trusted_hosts=[str(n) for n in self.trusted],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._trusts(scope.get("client")):
            await self.app(scope, receive, send)
            return
        forwarded_host = _last(scope["headers"], b"x-forwarded-host")
        if forwarded_host:
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
            scope = {**scope, "headers": [*headers, (b"host", forwarded_host)]}
        await self.forwarded(scope, receive, send)  # type: ignore[arg-type]

    def _trusts(self, client: tuple[str, int] | None) -> bool:
        if not client or not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:  # a unix socket's peer, or a test client's name
            return False
        return any(address in network for network in self.trusted)


def _last(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The last value of a header that may be repeated or a list.

    A proxy appends to what the client sent, so the last value is the
    nearest proxy's, the only one that can be trusted.
    """
    values = [v for k, v in headers if k == name]
    if not values:
        return b""
    return values[-1].split(b",")[-1].strip()
