"""``conveyor serve --processes 2`` on PostgreSQL, as real processes.

Which process answered a request is read from the operating system: the
child whose socket is the other end of the test's connection (psutil), so no
header or log line is needed to tell them apart. One server is started for
the whole story (starting two interpreters is most of the time): both
processes answer, a scrape of either counts both, a child killed is started
again (and what it counted still counts), a live stream on each process sees
a run created through any of them, and SIGTERM to the parent stops everything
and removes the metrics directory it made. SQLite is refused with the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.clock import SystemClock
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant

BIN = Path(sys.executable).parent
OK = {"name": "ok", "steps": [{"key": "a", "type": "set", "vars": {"x": 1}}]}
HANG = 60.0  # only catches a process that never starts or never stops (the host is shared)
READ = 10.0  # every socket read gives up after this: the test never hangs
READYZ = (
    "conveyor_http_requests_total",
    frozenset({("method", "GET"), ("route", "/readyz"), ("status", "200")}),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Server:
    """A running ``conveyor serve --processes 2``, and ways to see which child answers."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.parent = psutil.Process(proc.pid)

    def children(self) -> list[psutil.Process]:
        """The server processes (not multiprocessing's resource tracker)."""
        found = []
        for child in self.parent.children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    def connect(self) -> http.client.HTTPConnection:
        """A new connection: the kernel gives it to whichever child accepts first."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=READ)

    def owner(self, conn: http.client.HTTPConnection) -> int:
        """The pid of the child holding the other end of ``conn`` (after a response: accepted)."""
        assert conn.sock is not None
        local = conn.sock.getsockname()[1]
        for child in self.children():
            try:
                ends = child.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            if any(c.raddr and c.raddr.port == local for c in ends):
                return child.pid
        raise AssertionError(f"no server process holds the connection from port {local}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, int]:
        """GET ``path`` on a new connection: status, body and the pid that answered."""
        conn = self.connect()
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read().decode()
            return response.status, body, self.owner(conn)
        finally:
            conn.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def _serve(db: Database, tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PROMETHEUS_"))}
    env.update(
        CONVEYOR_DATABASE_URL=db.url.render_as_string(hide_password=False),
        CONVEYOR_PORT=str(port),
        CONVEYOR_LOG_FORMAT="console",
        CONVEYOR_RATE_LIMIT=os.environ["CONVEYOR_RATE_LIMIT"],
        CONVEYOR_RATE_LIMIT_BURST=os.environ["CONVEYOR_RATE_LIMIT_BURST"],
        CONVEYOR_MAX_STREAMS_PER_KEY="100",
        CONVEYOR_MAX_STREAMS_PER_TENANT="100",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "conveyor"), "serve", "--processes", "2"],
            env=env,
            stdout=out,
            stderr=out,
        )
    server = Server(proc, port, log)
    try:
        _wait_for(
            lambda: proc.poll() is not None or server.text().count("startup complete") >= 2,
            "both server processes to start",
        )
        assert proc.poll() is None, server.text()
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Stream:
    """A live stream of run changes on a connection of its own (so its process is known)."""

    def __init__(self, server: Server, auth: dict[str, str]) -> None:
        self.conn = server.connect()
        self.conn.request(
            "GET", "/api/v1/runs/stream", headers={**auth, "Accept": "text/event-stream"}
        )
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.pid = server.owner(self.conn)

    def next_event(self) -> tuple[str, str]:
        """The next event's type and data, skipping pings (a read past READ fails the test)."""
        event, data = "message", ""
        while True:
            line = self.response.readline().decode().rstrip("\r\n")
            if line.startswith(":"):
                continue
            if line == "":
                if data or event != "message":
                    return event, data
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data = value

    def close(self) -> None:
        self.conn.close()


def _setup(db: Database) -> dict[str, str]:
    tenant = make_tenant(db, "acme")
    with db.transaction() as conn:
        _, key = key_service.create_key(
            conn,
            tenant_id=tenant,
            scopes=["automations:trigger", "runs:read"],
            now=SystemClock().now(),
        )
    make_automation(db, tenant, OK)
    return {"Authorization": f"Bearer {key}"}


def _until_both_answer(server: Server, sent: Counter[int]) -> set[int]:
    """GET /readyz on new connections until each of the two children has answered one."""
    children = {c.pid for c in server.children()}
    assert len(children) == 2, server.text()

    def both() -> bool:
        status, _, pid = server.get("/readyz")
        assert status == 200
        sent[pid] += 1
        return children <= set(sent)

    _wait_for(both, "both processes to answer")
    return children


def test_two_processes_serve_count_and_stream_together(pg_db: Database, tmp_path: Path) -> None:
    auth = _setup(pg_db)
    sent: Counter[int] = Counter()
    with _serve(pg_db, tmp_path) as server:
        first = _until_both_answer(server, sent)
        metrics_dir = Path(server.children()[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir()  # made by the parent: the test set none

        # A scrape, whichever process answers it, counts every process's requests.
        status, text, scraped_by = server.get("/metrics")
        assert status == 200
        assert _samples(text)[READYZ] == sum(sent.values())
        assert sent[scraped_by] < sum(sent.values())  # so it counted the other's too

        # A child killed is replaced; what it counted still counts.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait_for(
            lambda: len({c.pid for c in server.children()} - first) == 1,
            "a new server process",
        )
        _wait_for(
            lambda: f"server process {victim} ended (exit code -9)" in server.text(), "the warning"
        )
        _wait_for(lambda: server.text().count("startup complete") >= 3, "the new process to start")
        second = _until_both_answer(server, sent)
        assert victim not in second
        _, text, _ = server.get("/metrics")
        assert _samples(text)[READYZ] == sum(sent.values())

        # A stream on each process sees a run created through either of them.
        streams: list[Stream] = []
        try:

            def one_on_each() -> bool:
                streams.append(Stream(server, auth))
                assert streams[-1].next_event()[0] == "ready"
                return {s.pid for s in streams} == second

            _wait_for(one_on_each, "a stream on each process")
            conn = server.connect()
            try:
                conn.request(
                    "POST",
                    "/api/v1/automations/ok/trigger",
                    body=json.dumps({}),
                    headers={**auth, "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                created: dict[str, Any] = json.loads(response.read())
                assert response.status == 202, created
                triggered_by = server.owner(conn)
            finally:
                conn.close()
            for stream in streams:
                event, data = stream.next_event()
                assert event == "run", (event, data)
                assert json.loads(data)["id"] == created["id"]
            assert {s.pid for s in streams} - {triggered_by}  # one stream was on the other process

            # SIGTERM to the parent stops every child (streams open) and removes its directory.
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(HANG) == 0, server.text()
        finally:
            for stream in streams:
                stream.close()
        assert not any(psutil.pid_exists(pid) for pid in second)
        assert not metrics_dir.exists()


def test_several_processes_are_refused_on_sqlite(sqlite_db: Database) -> None:
    url = sqlite_db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(app, ["serve", "--processes", "2", "--database-url", url])
    assert result.exit_code == 2, result.output
    assert "--processes 2 needs PostgreSQL" in result.stderr
    assert "SQLite admits one writer" in result.stderr
    # The variable says the same.
    result = CliRunner().invoke(
        app, ["serve", "--database-url", url], env={"CONVEYOR_SERVE_PROCESSES": "3"}
    )
    assert result.exit_code == 2, result.output
    assert "--processes 3 needs PostgreSQL" in result.stderr


def test_a_child_that_cannot_start_stops_the_parent_non_zero(
    pg_db: Database, tmp_path: Path
) -> None:
    # The children load an app that does not exist: each fails as it starts,
    # as a broken install would, and every restart would fail the same way.
    script = (
        "import sys\n"
        "from conveyor.cli import serving\n"
        "serving.APP_FACTORY = 'conveyor.cli.serving:no_such_app'\n"
        "from conveyor.cli.main import main\n"
        "sys.argv = ['conveyor', 'serve', '--processes', '2']\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PROMETHEUS_"))}
    env.update(
        CONVEYOR_DATABASE_URL=pg_db.url.render_as_string(hide_password=False),
        CONVEYOR_PORT=str(_free_port()),
        CONVEYOR_LOG_FORMAT="console",
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=HANG
    )
    assert done.returncode == 1, done.stderr
    assert "a server process failed to start" in done.stderr
    assert "no_such_app" in done.stderr
