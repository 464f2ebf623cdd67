"""bench/loadgen.py: every generator sends exactly the requests asked for and counts answers.

Against a small real HTTP/1.1 server on a thread (answers with Content-Length,
chunked, or closing the connection), not against Conveyor: these check the
generators, bench/http.py measures Conveyor with them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socketserver
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PATH = "/api/v1/automations/w1/trigger"
BODY = b'{"payload": {}}'
KEY = "cv_test_key"


def _load_module() -> ModuleType:
    # By file: bench/ on sys.path would put bench/http.py in the standard library's place.
    spec = importlib.util.spec_from_file_location("bench_loadgen", BENCH / "loadgen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


loadgen = _load_module()


@dataclass
class Seen:
    """What the server received."""

    mode: str = "length"
    requests: int = 0
    connections: int = 0  # those that carried a request
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(seen: Seen, number: int, n: int) -> tuple[bytes, bool]:
    """The answer to the server's ``number``-th request, the connection's ``n``-th, and
    whether to close the connection afterwards: every fifth request gets 409.
    """
    status = b"201 Created" if number % 5 else b"409 Conflict"
    body = b'{"id": "run_%d", "status": "pending"}' % number
    if seen.mode == "chunked":
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:]))
        return (
            b"HTTP/1.1 %s\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\nX-Trailer: 1\r\n\r\n"
            % (status, chunks),
            False,
        )
    close = seen.mode == "close" and n % 3 == 0
    extra = b"Connection: close\r\n" if close else b""
    head = b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n" % (status, len(body), extra)
    return head + body, close


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        seen: Seen = self.server.seen  # type: ignore[attr-defined]
        n = 0
        while True:
            request_line = self.rfile.readline()
            if not request_line:
                return
            headers = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", "0")))
            n += 1
            with seen.lock:
                seen.requests += 1
                number = seen.requests
                # Connections that carry requests (wrk first opens one to check the address).
                seen.connections += n == 1
                if request_line != f"POST {PATH} HTTP/1.1\r\n".encode() or body != BODY:
                    seen.bad.append(f"{request_line!r} {body!r}")
                if headers.get("authorization") != f"Bearer {KEY}":
                    seen.bad.append(f"authorization: {headers.get('authorization')}")
                if headers.get("content-type") != "application/json":
                    seen.bad.append(f"content-type: {headers.get('content-type')}")
            data, close = _answer(seen, number, n)
            self.wfile.write(data)
            if close:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.seen = seen  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("generator", ["httpx", "raw", "wrk"])
@pytest.mark.parametrize("mode", ["length", "chunked", "close"])
def test_sends_exactly_count_and_counts_every_answer(
    server: tuple[str, Seen], generator: str, mode: str
) -> None:
    if generator == "wrk" and shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: make wrk (apt-get install -y wrk)")
    url, seen = server
    seen.mode = mode
    started: list[bool] = []
    count, clients = 203, 8
    load = loadgen.run(
        generator, url, PATH, BODY, KEY, count, clients, lambda: started.append(True)
    )
    assert started == [True]
    assert seen.bad == []
    assert seen.requests == count
    assert load.answers == {"201": count - count // 5, "409": count // 5}
    assert load.seconds > 0
    assert 0 < load.req_p50_ms <= load.req_p99_ms
    if mode != "close":
        assert seen.connections == clients  # one keep-alive connection per client


def test_wrk_with_fewer_requests_than_clients(server: tuple[str, Seen]) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: make wrk (apt-get install -y wrk)")
    url, seen = server
    load = loadgen.run("wrk", url, PATH, BODY, KEY, 3, 8)
    assert seen.requests == 3
    assert load.answers == {"201": 3}


def test_read_response_reads_whole_answers_in_turn() -> None:
    async def go() -> list[tuple[int, bool]]:
        reader = asyncio.StreamReader()
        reader.feed_data(
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
            b"HTTP/1.1 204 No Content\r\n\r\n"
            b"HTTP/1.1 422 Unprocessable Content\r\nConnection: close\r\n"
            b"Content-Length: 2\r\n\r\n{}"
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        )
        reader.feed_eof()
        return [await loadgen.read_response(reader) for _ in range(6)]

    assert asyncio.run(go()) == [
        (201, True),
        (200, True),
        (204, True),
        (422, False),
        (200, False),
        (200, True),
    ]


def test_read_response_refuses_what_is_not_http() -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"SSH-2.0-OpenSSH\r\n\r\n")
        await loadgen.read_response(reader)

    with pytest.raises(ValueError, match="status line"):
        asyncio.run(go())
