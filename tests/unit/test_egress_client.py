"""The outbound HTTP client's reading: decompression under the cap, no redirects, refusals."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import httpx
import pytest

from conveyor.domain.egress import EgressPolicy
from conveyor.net.egress import Denied
from conveyor.net.http import (
    EgressClient,
    Fetched,
    HttpLimits,
    ResponseTooLarge,
    UndecodableResponse,
)

CAP = 4096


def _fetch(body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> Fetched:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers or {}, stream=httpx.ByteStream(body))

    async def go() -> Fetched:
        limits = HttpLimits(timeout=5, max_timeout=5, max_bytes=CAP)
        async with EgressClient(
            EgressPolicy(), limits, transport=httpx.MockTransport(answer)
        ) as client:
            return await client.fetch("GET", "https://api.example/x")

    return asyncio.run(go())


def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


TEXT = b"hello " * 100


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("deflate", _deflate(TEXT, zlib.MAX_WBITS)),
        ("deflate", _deflate(TEXT, -zlib.MAX_WBITS)),  # raw deflate, as some servers send
        ("gzip", gzip.compress(TEXT[:300]) + gzip.compress(TEXT[300:])),  # two members
        ("identity", TEXT),
        ("", TEXT),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "two-members", "identity", "none"],
)
def test_bodies_are_decoded(encoding: str, body: bytes) -> None:
    fetched = _fetch(body, {"Content-Encoding": encoding} if encoding else {})
    assert fetched.content == TEXT


def test_the_cap_counts_inflated_bytes() -> None:
    assert len(_fetch(gzip.compress(bytes(CAP)), {"Content-Encoding": "gzip"}).content) == CAP
    with pytest.raises(ResponseTooLarge, match="4,096 byte limit"):
        _fetch(gzip.compress(bytes(CAP + 1)), {"Content-Encoding": "gzip"})
    with pytest.raises(ResponseTooLarge):
        _fetch(bytes(CAP + 1))


@pytest.mark.parametrize(
    ("headers", "body"),
    [({"Content-Encoding": "br"}, b"\x0b\x02\x80hi\x03"), ({"Content-Encoding": "gzip"}, b"junk")],
    ids=["unknown-encoding", "corrupt"],
)
def test_an_undecodable_body_is_an_error(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(UndecodableResponse):
        _fetch(body, headers)


def test_redirects_are_answers_not_followed() -> None:
    fetched = _fetch(b"", {"Location": "http://169.254.169.254/"}, status=302)
    assert fetched.status_code == 302


def test_text_uses_the_declared_charset() -> None:
    body = "café".encode("latin-1")
    fetched = _fetch(body, {"Content-Type": "text/plain; charset=latin-1"})
    assert fetched.text == "café"


@pytest.mark.parametrize("url", ["http://10.0.0.1/", "http://0x7f.1:1/", "https://[::1]/"])
def test_a_refused_address_fails_before_any_connection(url: str) -> None:
    async def go() -> Any:
        limits = HttpLimits(timeout=5, max_timeout=5, max_bytes=CAP)
        async with EgressClient(EgressPolicy(), limits) as client:
            return await client.fetch("GET", url)

    with pytest.raises(Denied, match="not an address this server connects to"):
        asyncio.run(go())


def test_the_deadline_is_the_default_or_the_steps_own_up_to_the_longest() -> None:
    limits = HttpLimits(timeout=30, max_timeout=300, max_bytes=1024)
    assert limits.deadline(None) == 30
    assert limits.deadline(5) == 5
    assert limits.deadline(120) == 120
    assert limits.deadline(3600) == 300
