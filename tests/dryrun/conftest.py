"""Dry-run test fixtures: the API's client, tenant and key fixtures, and a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import auth, client, new_key, new_tenant, tenant, token
from tests.support.http_server import LOCAL, HitServer, running_server

__all__ = ["auth", "client", "new_key", "new_tenant", "tenant", "token"]


@pytest.fixture
def work(db: Database) -> Callable[[], int]:
    """Run a fresh worker until nothing is due; return how many tasks it finished."""

    def run() -> int:
        # The local test servers are allowed, so "nothing arrived" is the dry
        # run's doing, not the egress policy's.
        settings = Settings(
            database_url=db.url.render_as_string(hide_password=False),
            worker_id="dry-worker",
            egress_allow=LOCAL,
        )
        return asyncio.run(Worker(db, settings).run_until_idle())

    return run


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server that counts hits (a dry run must give it none)."""
    with running_server() as server:
        yield server
