"""Live streams: caps per key and per tenant, and one database poll shared by many viewers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from conveyor.api.app import create_app
from conveyor.api.streams import StreamSettings
from conveyor.clock import SystemClock
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import DEFINITION, TestClient
from tests.api.live import live_server

SSE = {"Accept": "text/event-stream"}
POLL = 0.05


@pytest.fixture
def app(db: Database) -> FastAPI:
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False),
        max_streams_per_key=10,
        max_streams_per_tenant=50,
    )
    app = create_app(settings, db=db, clock=SystemClock())
    app.state.streams = StreamSettings(history_poll_seconds=POLL, changes_poll_seconds=POLL)
    return app


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with live_server(app) as url:
        yield url


class Streams:
    """Opens streams from a background event loop and keeps them open."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.open: list[Any] = []

    def attempt(self, path: str, token: str) -> int:
        """Open a stream; keep it if the answer is 200; return the status."""

        async def go() -> int:
            request = self.client.build_request(
                "GET", path, headers={**SSE, "Authorization": f"Bearer {token}"}
            )
            response = await self.client.send(request, stream=True)
            if response.status_code == 200:
                self.open.append(response)
            else:
                await response.aclose()
            return response.status_code

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def close(self) -> None:
        async def go() -> None:
            for response in self.open:
                await response.aclose()
            await self.client.aclose()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def streams(base_url: str) -> Iterator[Streams]:
    s = Streams(base_url)
    try:
        yield s
    finally:
        s.close()


def _run(app: FastAPI, token: str) -> str:
    api = TestClient(app)
    auth = {"Authorization": f"Bearer {token}"}
    created = api.post("/api/v1/automations", json=DEFINITION, headers=auth)
    assert created.status_code in (201, 409), created.text
    run = api.post(f"/api/v1/automations/{DEFINITION['name']}/trigger", json={}, headers=auth)
    return str(run.json()["id"])


def test_a_thousand_attempts_from_one_key_stop_at_its_cap(
    app: FastAPI, base_url: str, new_tenant: NewTenant, new_key: NewKey
) -> None:
    greedy = new_key(new_tenant("greedy")["id"])
    other = new_key(new_tenant("other")["id"])
    with streams(base_url) as s:
        statuses = [s.attempt("/api/v1/runs/stream", greedy) for _ in range(1000)]
        assert statuses[:10] == [200] * 10
        assert set(statuses[10:]) == {429}
        refused = httpx.get(
            f"{base_url}/api/v1/runs/stream",
            headers={**SSE, "Authorization": f"Bearer {greedy}"},
            timeout=10,
        )
        assert refused.json()["code"] == "too_many_streams"
        assert refused.headers["Retry-After"]
        # Another tenant's requests keep being answered.
        listed = httpx.get(
            f"{base_url}/api/v1/runs", headers={"Authorization": f"Bearer {other}"}, timeout=10
        )
        assert listed.status_code == 200
        assert s.attempt("/api/v1/runs/stream", other) == 200
    # Closed streams give their places back.
    with streams(base_url) as s:
        assert s.attempt("/api/v1/runs/stream", greedy) == 200


def test_a_tenant_holds_at_most_its_cap_of_streams(
    app: FastAPI, base_url: str, tenant: dict[str, Any], new_key: NewKey
) -> None:
    keys = [new_key(tenant["id"]) for _ in range(6)]
    with streams(base_url) as s:
        statuses = [s.attempt("/api/v1/runs/stream", k) for k in keys for _ in range(10)]
        assert statuses.count(200) == 50
        assert statuses[-10:] == [429] * 10


def _polls_during(db: Database, seconds: float, marker: str) -> int:
    seen: list[str] = []

    def count(*args: Any) -> None:
        if marker in args[2]:
            seen.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        time.sleep(seconds)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(seen)


def test_viewers_of_one_run_share_one_poll(
    db: Database, app: FastAPI, base_url: str, tenant: dict[str, Any], new_key: NewKey
) -> None:
    keys = [new_key(tenant["id"]) for _ in range(3)]
    run_id = _run(app, keys[0])
    with streams(base_url) as s:
        for k in keys:
            for _ in range(10):
                assert s.attempt(f"/api/v1/runs/{run_id}/events", k) == 200
        polls = _polls_during(db, 1.0, "event_seq")  # the run's progress, once per tick
    # One stream polls about 1 / POLL times a second; thirty share it.
    assert 0 < polls <= 2 / POLL


def test_viewers_of_one_list_share_one_poll(
    db: Database, app: FastAPI, base_url: str, tenant: dict[str, Any], new_key: NewKey
) -> None:
    keys = [new_key(tenant["id"]) for _ in range(3)]
    with streams(base_url) as s:
        for k in keys:
            for _ in range(10):
                assert s.attempt("/api/v1/runs/stream?status=running", k) == 200
        polls = _polls_during(db, 1.0, "updated_at")
    assert 0 < polls <= 3 / POLL
