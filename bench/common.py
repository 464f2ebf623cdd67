"""What every benchmark shares: the machine line, fresh databases, real worker and server
processes, their peak memory and the CPU time they use.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fastapi
import httpx
import psycopg
import sqlalchemy

from conveyor.store.db import Database
from conveyor.store.migrate import upgrade

PG_ADMIN = os.environ.get("CONVEYOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
CONVEYOR = Path(sys.executable).with_name("conveyor")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# The servers' and workers' log level; BENCH_LOG_LEVEL=INFO measures them with
# every line written (the access lines, e.g.), with CONVEYOR_LOG_FORMAT=json.
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
# A server's environment for benchmarks that send more than a key's default
# rate limit (50/second) allows; they say so in their results.
UNLIMITED = {"CONVEYOR_RATE_LIMIT": "1000000/second", "CONVEYOR_RATE_LIMIT_BURST": "1000000"}


def machine() -> str:
    """Cores, CPU and the versions that matter, for a results table's heading."""
    cpu = "unknown CPU"
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("model name"):
            cpu = text.split(":", 1)[1].strip()
            break
    with psycopg.connect(PG_ADMIN) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"FastAPI {fastapi.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"psycopg {psycopg.__version__}, PostgreSQL {pg}, SQLite {sqlite3.sqlite_version}"
    )


def fresh_database(kind: str, tmp: Path, name: str = "conveyor_bench") -> Database:
    """A new, migrated database: a SQLite file in ``tmp``, or PostgreSQL database ``name``."""
    if kind == "sqlite":
        db = Database(f"sqlite:///{tmp / f'{name}.db'}")
    else:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        db = Database(f"{base}/{name}")
    upgrade(db)
    return db


def start_workers(
    db: Database, count: int, log_dir: Path, env: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """``count`` real ``conveyor worker`` processes on ``db``, started and connected.

    ``env`` adds or overrides variables of the workers' environment.
    """
    full_env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_LOG_LEVEL": LOG_LEVEL,
        # SQLite has no cross-process wake-up: the worker polls.
        "CONVEYOR_POLL_INTERVAL": "0.02" if db.is_sqlite else "0.5",
        **(env or {}),
    }
    procs = []
    for i in range(count):
        with (log_dir / f"worker{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(CONVEYOR), "worker"],
                    env={**full_env, "CONVEYOR_WORKER_ID": f"bench-{i}"},
                    stdout=log,
                    stderr=log,
                )
            )
    time.sleep(2.0)  # let them import and connect before the clock starts
    for p in procs:
        if p.poll() is not None:
            raise SystemExit(f"worker exited early; see {log_dir}")
    return procs


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stat(pid: int | str) -> list[str]:
    # The fields after the command, which is in parentheses and may hold spaces:
    # [0] is field 3 of proc(5) (state), so field n is [n - 3].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time a process has used so far (user + system, all its threads), in seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_seconds(database: str) -> tuple[float, dict[int, float]]:
    """CPU time used so far by this machine's PostgreSQL server, in seconds.

    Returns the server's total and, by pid, that of each live client backend of
    a database other than ``database`` (someone else's work: tests, another
    benchmark; compare pid by pid, as they come and go). The total is the sum
    over every live process whose command is ``postgres``, plus the
    postmaster's reaped children (``cutime + cstime``): a backend that exits,
    such as a pool's overflow connection, still counts once the postmaster has
    reaped it. A process that exits between the two reads can be missed or
    counted twice; take readings while the server is quiet.
    """
    procs: dict[int, tuple[list[str], str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
                procs[int(entry.name)] = (_stat(entry.name), title)
        except (FileNotFoundError, ProcessLookupError):
            continue
    total = 0
    others: dict[int, float] = {}
    for pid, (fields, title) in procs.items():
        ticks = int(fields[11]) + int(fields[12])
        total += ticks
        if int(fields[1]) not in procs:  # the postmaster: its parent is not postgres
            total += int(fields[13]) + int(fields[14])
        # A client backend's title: "postgres: [cluster: ]user database host(port) activity".
        elif re.search(r" (\S+\(\d+\)|\[local\]) ", title) and f" {database} " not in title:
            others[pid] = ticks / CLK_TCK
    return total / CLK_TCK, others


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine have spent busy so far (``/proc/stat``), in seconds."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> list[float]:
    """Stop the workers with SIGTERM; return each one's peak RSS in MB."""
    rss = [peak_rss_mb(p.pid) for p in procs]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    return rss


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    db: Database, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``conveyor serve`` on ``db``, once it answers ``/healthz``; returns it and its URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_PORT": str(port),
        "CONVEYOR_LOG_LEVEL": LOG_LEVEL,
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([str(CONVEYOR), "serve"], env=full_env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded shared host starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited early; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def sample_gets(
    client: httpx.Client, name: str, request: Callable[[int], str], count: int, warmup: int = 20
) -> tuple[list[float], httpx.Response, int]:
    """GET ``request(i)`` ``warmup`` times untimed, then ``count`` times timed.

    Returns the latencies in seconds, the last response and the bytes received
    in all (the timed ones); any answer but 200 ends the benchmark.
    """
    for i in range(warmup):
        client.get(request(i)).raise_for_status()
    samples, size = [], 0
    response = None
    for i in range(count):
        path = request(warmup + i)
        t0 = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise SystemExit(f"{name}: {response.status_code} {response.text[:500]}")
        size += len(response.content)
    assert response is not None, "count must be at least 1"
    return samples, response, size


def py_spy(pid: int, out: Path, rate: int = 1000) -> subprocess.Popen[bytes]:
    """Start ``py-spy record --gil`` on ``pid``, raw (collapsed) stacks to ``out``.

    ``--gil``: only the thread holding the GIL is sampled, so threads waiting
    for it do not count as busy. Stop it with ``stop_py_spy``. py-spy is not a
    dependency: ``.venv/bin/pip install py-spy``.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
    cmd = [spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--nonblocking", "--gil"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT: py-spy writes its file and exits."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
