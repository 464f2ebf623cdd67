"""A real local HTTP server for step tests: counts hits, fails or sleeps on request.

Paths:
    /ok/<anything>               200 {"ok": true, "path": ...}
    /fail/<n>/<anything>         500 for the first n hits of this path, then 200
    /status/<code>/<anything>    always answers <code>
    /sleep/<seconds>/<group>/... sleeps, then 200; concurrent requests per group are tracked
    /bomb/<mib>/...              200, a gzip body that inflates to <mib> MiB of zeros
    /trickle/<seconds>/...       200 announcing 1 MiB, then one byte every <seconds>
    /redirect/<anything>         302 to /ok/<anything>
    /bad-json/<levels>/...       200 application/json that Python's json reads but JSON
                                 cannot hold: NaN, Infinity, a lone surrogate (in a value
                                 and in a key) and <levels> nested arrays (``bad_json_body``)
Every hit is counted per path (query string included), and every connection
accepted in ``connections`` (so a test can tell that nothing connected at all).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The address the test servers listen on, as CONVEYOR_EGRESS_ALLOW names it: what
# settings whose steps call them allow explicitly (the default permits nothing private).
LOCAL = "127.0.0.1/32"


class HitServer(ThreadingHTTPServer):
    """The server; ``hits`` counts requests per path, ``bodies`` keeps JSON bodies."""

    daemon_threads = True
    request_queue_size = 512  # the default of 5 resets connections under load

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.bodies: dict[str, list[Any]] = {}
        self.headers_seen: dict[str, list[dict[str, str]]] = {}
        # For /sleep/<s>/<group>/...: requests of a group in flight now, and the most ever.
        self.inflight: Counter[str] = Counter()
        self.max_inflight: Counter[str] = Counter()
        self.connections = 0
        self.lock = threading.Lock()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: HitServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.hits[self.path] += 1
            count = self.server.hits[self.path]
            if raw:
                try:
                    self.server.bodies.setdefault(self.path, []).append(json.loads(raw))
                except ValueError:
                    self.server.bodies.setdefault(self.path, []).append(raw.decode())
            self.server.headers_seen.setdefault(self.path, []).append(dict(self.headers))
        parts = self.path.lstrip("/").split("/")
        if parts[0] == "bomb":
            self._send(200, gzip_bomb(int(parts[1])), {"Content-Encoding": "gzip"})
            return
        if parts[0] == "trickle":
            self._trickle(float(parts[1]))
            return
        if parts[0] == "bad-json":
            self._send(200, bad_json_body(int(parts[1])), {"Content-Type": "application/json"})
            return
        if parts[0] == "redirect":
            self._send(302, b"", {"Location": "/ok/" + "/".join(parts[1:])})
            return
        status = 200
        if parts[0] == "fail" and count <= int(parts[1]):
            status = 500
        elif parts[0] == "status":
            status = int(parts[1])
        elif parts[0] == "sleep":
            group = parts[2] if len(parts) > 2 else ""
            with self.server.lock:
                self.server.inflight[group] += 1
                self.server.max_inflight[group] = max(
                    self.server.max_inflight[group], self.server.inflight[group]
                )
            try:
                time.sleep(float(parts[1]))
            finally:
                with self.server.lock:
                    self.server.inflight[group] -= 1
        body = json.dumps({"ok": status < 400, "path": self.path, "hit": count}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a killed worker): nothing to answer

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self, interval: float) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            for _ in range(1 << 20):  # until the client gives up
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(interval)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle


def bad_json_body(levels: int) -> bytes:
    """Raw JSON text a careless endpoint may send, written byte by byte."""
    deep = b"[" * levels + b"]" * levels
    return (
        b'{"a": NaN, "b": "\\ud800", "c": -Infinity, "k\\udc00": 1, "ok": "caf\xc3\xa9", '
        b'"deep": ' + deep + b"}"
    )


_BOMBS: dict[int, bytes] = {}


def gzip_bomb(mib: int) -> bytes:
    """A gzip body inflating to ``mib`` MiB of zeros (about 1 KiB per MiB), made once."""
    if mib not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        _BOMBS[mib] = b"".join(packer.compress(zeros) for _ in range(mib)) + packer.flush()
    return _BOMBS[mib]


@contextmanager
def running_server() -> Iterator[HitServer]:
    """Start a ``HitServer`` in a thread; stop it afterwards."""
    server = HitServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
