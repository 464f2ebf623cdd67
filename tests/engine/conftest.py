"""Engine test fixtures: a local HTTP server, a fake clock, a worker, a tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.clock import FakeClock
from conveyor.engine.worker import Worker
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.support.http_server import LOCAL, HitServer, running_server


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server on 127.0.0.1 that counts hits."""
    with running_server() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock(datetime(2026, 6, 8, 14, 15, tzinfo=UTC))


class Harness:
    """Drives one tenant's automations through a real worker on a real database."""

    def __init__(self, db: Database, clock: FakeClock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.tenant = make_tenant(db, "acme", now=clock.now())
        self.worker = Worker(db, settings, clock=clock)

    def automation(self, definition: dict[str, Any]) -> str:
        return make_automation(self.db, self.tenant, definition, now=self.clock.now())

    def trigger(self, automation: str, payload: dict[str, Any] | None = None, **kw: Any) -> str:
        return trigger(self.db, self.tenant, automation, payload, now=self.clock.now(), **kw)

    def work(self) -> int:
        """Run the worker until nothing is due."""
        return asyncio.run(self.worker.run_until_idle())

    def advance(self, seconds: float) -> int:
        """Move the clock, then work."""
        self.clock.advance(seconds)
        return self.work()

    def detail(self, run_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            return get_run_detail(conn, self.tenant, run_id)

    def step(self, run_id: str, key: str) -> dict[str, Any]:
        return next(s for s in self.detail(run_id)["steps"] if s["key"] == key)

    def event_types(self, run_id: str) -> list[str]:
        from conveyor.store.runs import get_events

        with self.db.read() as conn:
            return [e["type"] for e in get_events(conn, run_id)]


@pytest.fixture
def settings(db: Database) -> Settings:
    """Settings pointing at the test database, with a short lease.

    Steps call the local test server, so its address is allowed explicitly
    (the default permits nothing private).
    """
    return Settings(
        database_url=db.url.render_as_string(hide_password=False),
        lease_seconds=30,
        worker_id="test-worker",
        egress_allow=LOCAL,
    )


@pytest.fixture
def harness(db: Database, clock: FakeClock, settings: Settings) -> Harness:
    """A tenant, a worker and a fake clock over the parametrised database."""
    return Harness(db, clock, settings)
