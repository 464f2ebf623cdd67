"""Load generators for bench/http.py: N keep-alive clients send ``count`` POSTs, no more.

- ``httpx``: N asyncio httpx clients (the historical default; ~2 ms of CPU per
  request, which competes with the server for a 2-core machine).
- ``raw``: N asyncio stream connections (plain sockets, HTTP/1.1 keep-alive);
  one pre-built request (bytes) for every trigger, and only the status line and
  ``Content-Length`` / ``Transfer-Encoding: chunked`` parsed, enough to read the
  whole answer.
- ``wrk``: Debian's ``wrk`` with bench/wrk_trigger.lua; one thread per
  connection, each stopping after its share of ``count`` answers (wrk itself is
  duration-based, see that script); latencies are taken by the script, not
  from wrk's histogram (which adds samples to correct for coordinated omission).

Each returns a ``Load``: wall time, answers by status (or error name) and
request latency p50/p99. The generator's CPU is read by the caller from
``/proc/self/stat``: this process's own time plus its reaped children's
(``cpu_seconds_with_children``), which is where wrk's time lands once it is
waited for.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

GENERATORS = ("httpx", "raw", "wrk")
WRK_SCRIPT = Path(__file__).resolve().with_name("wrk_trigger.lua")
# Generous: only there to end a hung run, never to shape one.
TIMEOUT_S = 600


@dataclass
class Load:
    """What one load produced."""

    seconds: float
    answers: dict[str, int]
    req_p50_ms: float
    req_p99_ms: float


def cpu_seconds_with_children() -> float:
    """CPU seconds of this process plus its reaped children (utime, stime, cutime, cstime)."""
    # proc(5) fields 14-17, after the command (which may hold spaces) in parentheses.
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        only = latencies[0] * 1000 if latencies else float("nan")
        return only, only
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


def run(
    generator: str,
    url: str,
    path: str,
    body: bytes,
    key: str,
    count: int,
    clients: int,
    ready: Callable[[], object] = lambda: None,
) -> Load:
    """Send ``count`` POSTs of ``body`` to ``url + path`` over ``clients`` connections.

    ``ready`` is called once the generator is set up, just before the clock starts.
    """
    if generator == "httpx":
        return httpx_load(url, path, body, key, count, clients, ready)
    if generator == "raw":
        return raw_load(url, path, body, key, count, clients, ready)
    if generator == "wrk":
        return wrk_load(url, path, body, key, count, clients, ready)
    raise ValueError(f"unknown generator {generator!r}")


# --- httpx -------------------------------------------------------------------


async def _httpx_client(
    client: httpx.AsyncClient,
    path: str,
    body: bytes,
    todo: list[int],
    lat: list[float],
    answers: collections.Counter[str],
) -> None:
    while todo:
        todo.pop()
        t0 = time.perf_counter()
        try:
            status = str((await client.post(path, content=body)).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        lat.append(time.perf_counter() - t0)
        answers[status] += 1


def httpx_load(
    url: str,
    path: str,
    body: bytes,
    key: str,
    count: int,
    clients: int,
    ready: Callable[[], object],
) -> Load:
    """N asyncio httpx clients, one keep-alive connection each (made on first use)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    answers: collections.Counter[str] = collections.Counter()

    async def go() -> float:
        pool = [
            httpx.AsyncClient(base_url=url, headers=headers, timeout=120) for _ in range(clients)
        ]
        todo = list(range(count))
        ready()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_httpx_client(c, path, body, todo, latencies, answers) for c in pool)
        )
        seconds = time.perf_counter() - t0
        for c in pool:
            await c.aclose()
        return seconds

    seconds = asyncio.run(go())
    return Load(seconds, dict(answers), *_percentiles(latencies))


# --- raw sockets -------------------------------------------------------------


def build_request(host: str, path: str, body: bytes, key: str) -> bytes:
    """The bytes of one keep-alive HTTP/1.1 POST with a JSON body."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole HTTP/1.1 answer; its status and whether the connection stays open.

    Parses only what finding the answer's end needs: the status line,
    ``Content-Length``, ``Transfer-Encoding: chunked`` and ``Connection: close``.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(parts[1])
    length, chunked, keep = 0, False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            keep = value != b"close" and (keep or value == b"keep-alive")
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)  # the chunk and its CRLF
    elif length:
        await reader.readexactly(length)
    return status, keep


async def _raw_client(
    host: str,
    port: int,
    request: bytes,
    todo: list[int],
    lat: list[float],
    answers: collections.Counter[str],
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
) -> None:
    while todo:
        todo.pop()
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            writer.write(request)
            status, keep = await read_response(reader)
            answer = str(status)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            answer, keep = type(e).__name__, False
        lat.append(time.perf_counter() - t0)
        answers[answer] += 1
        if not keep and conn is not None:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()
        await conn[1].wait_closed()


def raw_load(
    url: str,
    path: str,
    body: bytes,
    key: str,
    count: int,
    clients: int,
    ready: Callable[[], object],
) -> Load:
    """N asyncio stream connections (made before the clock starts), one request at a time each."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(parts.netloc, path, body, key)
    latencies: list[float] = []
    answers: collections.Counter[str] = collections.Counter()

    async def go() -> float:
        conns = [await asyncio.open_connection(host, port) for _ in range(clients)]
        todo = list(range(count))
        ready()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_raw_client(host, port, request, todo, latencies, answers, c) for c in conns)
        )
        return time.perf_counter() - t0

    seconds = asyncio.run(go())
    return Load(seconds, dict(answers), *_percentiles(latencies))


# --- wrk ---------------------------------------------------------------------


def wrk_command(url: str, path: str, body: bytes, key: str, count: int, clients: int) -> list[str]:
    """wrk's command line: one thread per connection, a long ``-d`` as the hang guard."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk (Debian's package)")
    threads = max(1, min(clients, count))
    return [
        wrk,
        f"-t{threads}",
        f"-c{threads}",
        f"-d{TIMEOUT_S}s",
        "--timeout",
        "120s",
        "-s",
        str(WRK_SCRIPT),
        url + path,
        "--",
        key,
        str(count),
        body.decode(),
        str(threads),
    ]


def _interrupt_until_exit(proc: subprocess.Popen[str]) -> None:
    """SIGINT ``proc`` until it exits: wrk ignores SIGINT until its threads are started."""
    while proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)


def wrk_load(
    url: str,
    path: str,
    body: bytes,
    key: str,
    count: int,
    clients: int,
    ready: Callable[[], object],
) -> Load:
    """Run wrk until each thread reports its share of answers, then stop it with SIGINT.

    wrk's main thread sleeps for the whole ``-d`` whatever its threads do, so the
    script prints ``done`` when a thread has had its last answer; once every
    thread has, SIGINT ends the sleep and wrk runs the script's ``done()``,
    which prints one JSON line (answers by status, each request's latency).
    The clock runs from starting wrk (its start-up, a few ms, included) to the
    last ``done``.
    """
    cmd = wrk_command(url, path, body, key, count, clients)
    threads = int(cmd[1][2:])
    ready()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    finished, seconds, report, lines = 0, float("nan"), None, []
    stopper = threading.Thread(target=_interrupt_until_exit, args=(proc,), daemon=True)
    for line in proc.stdout:
        if line == "done\n":
            finished += 1
            if finished == threads:
                seconds = time.perf_counter() - t0
                stopper.start()
        elif line.startswith("{"):
            report = json.loads(line)
        else:
            lines.append(line)
    proc.stdout.close()
    proc.wait()  # reaps wrk: its CPU joins this process's cutime/cstime
    if report is None or finished != threads:
        raise SystemExit(f"wrk ended early ({proc.returncode}):\n{''.join(lines)}")
    answers = {str(k): int(v) for k, v in report["answers"].items()}
    latencies = [us / 1e6 for us in report["latencies_us"]]
    return Load(seconds, answers, *_percentiles(latencies))
