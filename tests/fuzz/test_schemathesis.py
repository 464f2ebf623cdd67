"""Schemathesis over the whole API against a real ``conveyor serve`` (make test, make fuzz).

A fresh database (a SQLite file, or a PostgreSQL database of this test's own)
is migrated and given a tenant with an all-scopes key and a little data; then a
real ``conveyor serve`` process answers schemathesis, which runs every phase
(examples, coverage, fuzzing, stateful) with every check over
``/openapi.json``. Zero failures are expected: a failure prints schemathesis's
report (each failure with a ``curl`` to reproduce it); the test also fails
when the server logged an error or exited, or when the fuzzer's key stopped working.

The server reaches nothing outside the machine: the egress policy denies every
address (``CONVEYOR_EGRESS_ALLOW`` set to empty, so nothing private, and
``CONVEYOR_EGRESS_DENY`` every IPv4 and IPv6 address, so nothing public), and
no worker runs, so no step is executed.

The run is bounded by a time budget (``--max-time``), ``CONVEYOR_FUZZ_SECONDS``
per database (default 40, so the whole test stays under two minutes);
``make fuzz`` gives it minutes. ``CONVEYOR_FUZZ_SEED`` replays a run (the seed
is printed in the report); unset, ``make test`` uses a fixed seed, so a failure
there is reproducible, and ``make fuzz`` a random one.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis  # a missing schemathesis fails collection: `make venv` installs it

from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services.keys import create_key
from conveyor.services.tenants import ensure_tenant
from conveyor.store.db import Database
from conveyor.store.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, pg_url

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECONDS = int(os.environ.get("CONVEYOR_FUZZ_SECONDS", "40"))
SEED = os.environ.get("CONVEYOR_FUZZ_SEED", "20261202")  # "random": a new one each run
# Past the budget, schemathesis finishes the cases in flight and shrinks what failed.
GRACE_SECONDS = 45
# Every address: with an empty allow list (nothing private) nothing is left to reach.
DENY_ALL = "0.0.0.0/0,::/0"

AUTOMATION = {
    "name": "fuzz-welcome",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello"}},
        {"key": "check", "type": "condition", "expression": "vars.greeting == 'hello'"},
    ],
}


@dataclass
class Target:
    """A running server under fuzz and the key the fuzzer uses."""

    url: str
    token: str
    key_id: str
    log: Path
    proc: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fuzz.db'}"
        yield url
        return
    name = f"conveyor_fuzz_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_url(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tenant_key(url: str) -> tuple[str, str]:
    """Migrate, create the `fuzz` tenant and an all-scopes key; return the key's id and token."""
    db = Database(url)
    try:
        upgrade(db)
        now = SystemClock().now()
        with db.transaction() as conn:
            tenant, _ = ensure_tenant(conn, "fuzz", now=now)
            key, token = create_key(
                conn, tenant_id=tenant["id"], scopes=ALL_SCOPES, label="fuzz", now=now
            )
    finally:
        db.dispose()
    return str(key["id"]), token


def _server_env(database_url: str) -> dict[str, str]:
    """The server's environment: none of the caller's CONVEYOR_* settings, only these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "CONVEYOR_DATABASE_URL": database_url,
            "CONVEYOR_LOG_LEVEL": "WARNING",
            "CONVEYOR_EGRESS_ALLOW": "",
            "CONVEYOR_EGRESS_DENY": DENY_ALL,
            # The fuzzer sends thousands of requests a minute, and unauthenticated
            # ones on purpose: the limits would answer 429 to most of the run.
            "CONVEYOR_RATE_LIMIT": "1000000/second",
            "CONVEYOR_RATE_LIMIT_BURST": "1000000",
            "CONVEYOR_AUTH_FAILURE_LIMIT": "1000000/second",
            "CONVEYOR_SECRET_KEY": "fuzz-secret-key-0123456789-abcdefghijkl",
        }
    )
    return env


def _seed(client: httpx.Client) -> None:
    """A little of everything, so lists have items and links have ids to follow."""
    created = client.post("/api/v1/automations", json=AUTOMATION)
    assert created.status_code == 201, created.text
    for payload in ({"order": 1}, {"order": 2}):
        run = client.post(
            f"/api/v1/automations/{AUTOMATION['name']}/trigger", json={"payload": payload}
        )
        assert run.status_code in (200, 201, 202), run.text
    contact = client.post(
        "/api/v1/contacts", json={"external_id": "fuzz-1", "email": "fuzz@example.com"}
    )
    assert contact.status_code in (200, 201), contact.text
    template = client.put(
        "/api/v1/templates/fuzz-receipt",
        json={"channel": "email", "subject": "Thanks", "text": "Hello {{ contact.email }}"},
    )
    assert template.status_code in (200, 201), template.text


@pytest.fixture
def target(database_url: str, tmp_path: Path) -> Iterator[Target]:
    """``conveyor serve`` on the database, once it answers, seeded; stopped afterwards."""
    key_id, token = _tenant_key(database_url)
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**_server_env(database_url), "CONVEYOR_PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "conveyor"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"conveyor serve exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"conveyor serve did not start:\n{log.read_text()}"
            time.sleep(0.1)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            _seed(client)
        yield Target(url=url, token=token, key_id=key_id, log=log, proc=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _report(output: str) -> str:
    """Schemathesis's report from its first section on (failures, errors, warnings, summary)."""
    start = re.search(r"^=+ [A-Z]+ =+$", output, re.M)
    return output[start.start() :] if start else output


def _server_errors(log: Path) -> list[str]:
    """Tracebacks and ERROR lines the server logged (an exception need not become a 500)."""
    text = log.read_text(errors="replace")
    return [
        block
        for block in re.split(r"\n(?=\S)", text)
        if "Traceback" in block or re.search(r"\bERROR\b", block)
    ]


@pytest.mark.timeout(SECONDS + GRACE_SECONDS + 30)
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_schemathesis_finds_nothing(target: Target, tmp_path: Path) -> None:
    """Every phase and every check of schemathesis pass against the real server."""
    seed = str(int.from_bytes(os.urandom(8), "big")) if SEED == "random" else SEED
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{target.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {target.token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-time",
        str(SECONDS),
        # One worker: with two threads, Hypothesis describing a strategy (ast.parse of a
        # lambda's source) at the same time in both trips CPython 3.11's shared AST
        # recursion counter ("SystemError: AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--seed",
        seed,
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        # U+0000 is refused in every string and parameter (docs/api.md, "What JSON is
        # refused"; tests/api/test_nul_characters.py), a rule the schema does not state.
        "--generation-allow-x00",
        "false",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CONVEYOR_FUZZ_KEY_ID": target.key_id,
        "COLUMNS": "120",
    }
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=SECONDS + GRACE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        pytest.fail(
            f"schemathesis {schemathesis.__version__} ran past {SECONDS + GRACE_SECONDS} s "
            f"(seed {seed}); its output so far:\n{out[-20_000:]}",
            pytrace=False,
        )
    elapsed = time.monotonic() - started

    problems: list[str] = []
    if done.returncode != 0:
        problems.append(
            f"schemathesis {schemathesis.__version__} exited with {done.returncode} after "
            f"{elapsed:.0f} s (seed {seed}; replay with CONVEYOR_FUZZ_SEED={seed}):\n"
            f"{_report(done.stdout)}\n{done.stderr[-5_000:]}"
        )
    if target.proc.poll() is not None:
        problems.append(f"conveyor serve exited with {target.proc.returncode} during the run")
    else:
        still = httpx.get(
            f"{target.url}/api/v1/keys",
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=10,
        )
        if still.status_code != 200:
            problems.append(
                f"the fuzzer's key no longer works ({still.status_code}): the run stopped "
                f"testing anything once that happened\n{still.text}"
            )
    errors = _server_errors(target.log)
    if errors:
        problems.append(
            f"the server logged {len(errors)} error(s); the first ones:\n"
            + "\n".join(errors[:5])[-10_000:]
        )
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
