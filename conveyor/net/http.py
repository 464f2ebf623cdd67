"""The one outbound HTTP client: pinned connections, a byte cap and a total deadline.

``EgressClient`` is an ``httpx.AsyncClient`` whose connections go through
``conveyor.net.egress`` (resolved once, checked, pinned), with redirects off,
no proxies or ``.netrc`` from the environment, and ``fetch``, which reads a
response under two limits:

- a **byte cap**, counted on the body *after* decompression: it is inflated
  here, a bounded piece at a time, so a small gzip body that inflates to
  gigabytes costs at most the cap (plus a piece) of memory before the call
  fails with ``ResponseTooLarge``;
- a **total deadline** over resolving, connecting, sending and reading the
  whole body, so a server trickling a byte at a time cannot keep an attempt
  alive past it (httpx's own timeouts are per read).

Calls to endpoints the operator configured (``trusted=True``) use a second
pool without the policy check, so a connection opened for one is never reused
for a tenant's call to the same origin.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from conveyor.domain.egress import EgressPolicy
from conveyor.net.egress import EgressError, PinnedBackend
from conveyor.settings import Settings

# Inflated bytes produced per step: what a compressed body may cost beyond the cap.
PIECE = 64 * 1024
# The encodings inflated here under the cap; others are not asked for.
ACCEPT_ENCODING = "gzip, deflate"


class ResponseTooLarge(EgressError):
    """The response body is over the byte cap (counted after decompression)."""

    code = "response_too_large"


class DeadlinePassed(EgressError):
    """The call did not finish (connect, send and the whole body) within its deadline."""

    code = "deadline_passed"


class UndecodableResponse(EgressError):
    """The body is in an encoding we do not decode (under the cap), or is corrupt."""

    code = "http_error"


@dataclass(frozen=True)
class HttpLimits:
    """The limits of outbound calls: default and longest deadline, and the byte cap."""

    timeout: float
    max_timeout: float
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits the settings give."""
        return cls(settings.http_timeout, settings.http_max_timeout, settings.response_cap())

    def deadline(self, requested: float | None) -> float:
        """The deadline of a call: the default, or what a step asks for, at most the longest."""
        if requested is None or requested <= 0:
            return self.timeout
        return min(requested, self.max_timeout)


@dataclass(frozen=True)
class Fetched:
    """A whole response: status, headers and the (decompressed) body."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    charset: str | None = None

    @property
    def text(self) -> str:
        """The body as text (its declared charset, else UTF-8; bad bytes replaced)."""
        try:
            return self.content.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return jsonlib.loads(self.content)


class _Inflater:
    """gzip or deflate, inflated at most ``PIECE`` bytes at a time."""

    def __init__(self, encoding: str) -> None:
        self.gzip = encoding in ("gzip", "x-gzip")
        # deflate is meant to be zlib-wrapped; some servers send it raw (tried next).
        self.wbits = 16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS
        self.started = False
        self.d = zlib.decompressobj(self.wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self.d.decompress(data, PIECE)
            except zlib.error as exc:
                if self.started or self.gzip:
                    raise UndecodableResponse(f"the {self._name} body is corrupt: {exc}") from exc
                self.wbits, self.d = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
                self.started = True
                continue
            self.started = True
            if out:
                yield out
            data = self.d.unconsumed_tail
            if self.d.eof:
                rest = self.d.unused_data
                if not (self.gzip and rest):
                    return  # anything after a deflate stream is ignored, as browsers do
                self.d, data = zlib.decompressobj(self.wbits), rest  # another gzip member

    def flush(self) -> bytes:
        # All input is in; what zlib still holds is at most a window's worth.
        return b"" if self.d.eof else self.d.flush()

    @property
    def _name(self) -> str:
        return "gzip" if self.gzip else "deflate"


def _inflater(encoding: str) -> _Inflater | None:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    raise UndecodableResponse(
        f"the response is encoded as {encoding!r}; only gzip and deflate are decoded"
    )


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    inflater = _inflater(response.headers.get("content-encoding", ""))
    body = bytearray()

    def take(piece: bytes) -> None:
        body.extend(piece)
        if len(body) > cap:
            raise ResponseTooLarge(f"the response is over the {cap:,} byte limit")

    async for chunk in response.aiter_raw():
        if inflater is None:
            take(chunk)
            continue
        for piece in inflater.feed(chunk):
            take(piece)
    if inflater is not None:
        take(inflater.flush())
    return bytes(body)


def _transport(policy: EgressPolicy | None) -> httpx.AsyncHTTPTransport:
    # One TLS context for both (loading the CA store costs ~20 ms of a start).
    ssl_context = httpx.create_ssl_context(trust_env=True)  # SSL_CERT_FILE still counts
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False)
    # httpx's transport takes no network backend: give its pool ours (pinned),
    # with httpx's default pool limits. (constraints.txt pins httpx; a test
    # connecting through this client notices if `_pool` ever changes.)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=PinnedBackend(policy),
    )
    return transport


def quiet_library_logs() -> None:
    """Keep httpx's and httpcore's request lines out of the logs.

    At INFO httpx logs every request's full URL (``HTTP Request: POST
    https://hooks.example/x?token=...``), query string and userinfo included;
    httpcore's DEBUG lines do too. Their warnings still show.
    """
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class EgressClient(httpx.AsyncClient):
    """The outbound HTTP client: ``fetch`` through it (see the module docstring)."""

    def __init__(
        self,
        policy: EgressPolicy,
        limits: HttpLimits,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        quiet_library_logs()
        super().__init__(
            transport=transport or _transport(policy),
            follow_redirects=False,
            trust_env=False,
            timeout=limits.timeout,
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )
        self.policy = policy
        self.limits = limits
        self._given_transport = transport
        self._trusted: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressClient:
        """The client for these settings' policy and limits."""
        return cls(settings.egress_policy(), HttpLimits.from_settings(settings))

    def _trusted_client(self) -> httpx.AsyncClient:
        if self._trusted is None:
            self._trusted = httpx.AsyncClient(
                transport=self._given_transport or _transport(None),
                follow_redirects=False,
                trust_env=False,
                timeout=self.limits.timeout,
                headers={"Accept-Encoding": ACCEPT_ENCODING},
            )
        return self._trusted

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        timeout: float | None = None,
        trusted: bool = False,
    ) -> Fetched:
        """Make one request and read the whole answer under the cap and the deadline.

        ``timeout`` is what the caller asks for (a step's own), bounded by
        ``CONVEYOR_HTTP_MAX_TIMEOUT``; None is ``CONVEYOR_HTTP_TIMEOUT``.

        Raises:
            Denied: the egress policy refuses the host (nothing was connected to).
            ResponseTooLarge: the body is over the cap.
            DeadlinePassed: the whole call took longer than its deadline.
            UndecodableResponse: the body cannot be decoded.
            httpx.HTTPError: the call failed otherwise.
        """
        deadline = self.limits.deadline(timeout)
        client = self._trusted_client() if trusted else self
        try:
            async with asyncio.timeout(deadline):
                request = client.build_request(
                    method, url, headers=headers, json=json, content=content, timeout=deadline
                )
                response = await client.send(request, stream=True)
                try:
                    body = await _read_capped(response, self.limits.max_bytes)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise DeadlinePassed(f"no complete answer within {deadline:g} s") from exc
        except httpx.TimeoutException as exc:  # one phase ran out: the deadline did
            raise DeadlinePassed(f"no complete answer within {deadline:g} s") from exc
        return Fetched(response.status_code, response.headers, body, response.charset_encoding)

    async def aclose(self) -> None:
        """Close both pools."""
        if self._trusted is not None:
            await self._trusted.aclose()
            self._trusted = None
        await super().aclose()
