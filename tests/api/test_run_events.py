"""Run history over HTTP: JSON pages, and live SSE streams against a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from conveyor.api.app import create_app
from conveyor.api.streams import StreamSettings
from conveyor.clock import SystemClock
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import DEFINITION, TestClient, assert_problem
from tests.api.live import SSEReader, live_server, stream_client

SSE = {"Accept": "text/event-stream"}
# Quick polls and pings, so a test sees changes within milliseconds.
FAST = StreamSettings(
    ping_seconds=15,
    history_poll_seconds=0.02,
    changes_poll_seconds=0.02,
    history_linger_seconds=0.2,
)

PAUSING: dict[str, Any] = {
    "name": "pausing",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello"}},
        {"key": "pause", "type": "delay", "duration": "PT1M"},
        {"key": "check", "type": "condition", "expression": "vars.greeting == 'hello'"},
    ],
}


def _settings(db: Database) -> Settings:
    return Settings(
        database_url=db.url.render_as_string(hide_password=False), worker_id="test-worker"
    )


@pytest.fixture
def app(db: Database) -> FastAPI:
    """The app on the test database, with fast stream timings."""
    app = create_app(_settings(db), db=db, clock=SystemClock())
    app.state.streams = FAST
    return app


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1."""
    with live_server(app) as url:
        yield url


@pytest.fixture
def api(app: FastAPI) -> TestClient:
    """An in-process client of the same app (for plain JSON calls)."""
    return TestClient(app)


class SkippingClock:
    """Real time, plus whatever the test skipped ahead (so delays end at once)."""

    def __init__(self) -> None:
        self.skipped = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skipped

    def advance(self, seconds: float) -> None:
        self.skipped += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> SkippingClock:
    """The worker's clock: the API stamps runs with real time, so this one follows it."""
    return SkippingClock()


@pytest.fixture
def worker(db: Database, clock: SkippingClock) -> Worker:
    """A worker on the test database."""
    return Worker(db, _settings(db), clock=clock)


def _work(worker: Worker) -> None:
    asyncio.run(worker.run_until_idle())


def _start(api: TestClient, auth: dict[str, str], definition: dict[str, Any], **body: Any) -> str:
    created = api.post("/api/v1/automations", json=definition, headers=auth)
    assert created.status_code in (201, 409), created.text
    run = api.post(f"/api/v1/automations/{definition['name']}/trigger", json=body, headers=auth)
    assert run.status_code == 202, run.text
    return str(run.json()["id"])


def _finished_run(api: TestClient, auth: dict[str, str], worker: Worker) -> str:
    run_id = _start(api, auth, DEFINITION)
    _work(worker)
    assert api.get(f"/api/v1/runs/{run_id}", headers=auth).json()["status"] == "completed"
    return run_id


# -- JSON ---------------------------------------------------------------------


def test_history_pages_in_order(api: TestClient, auth: dict[str, str], worker: Worker) -> None:
    run_id = _finished_run(api, auth, worker)
    whole = api.get(f"/api/v1/runs/{run_id}/events", headers=auth)
    assert whole.status_code == 200, whole.text
    items = whole.json()["items"]
    assert whole.json()["next_after"] is None
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    assert items[0]["type"] == "run.created"
    assert items[-1]["type"] == "run.completed"
    assert set(items[0]) == {"seq", "type", "step_key", "data", "created_at"}
    assert items[0]["created_at"].endswith("Z")
    assert any(e["type"] == "step.completed" and e["step_key"] == "greet" for e in items)

    pages: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = api.get(
            f"/api/v1/runs/{run_id}/events",
            params={"after": after, "limit": 2},
            headers=auth,
        ).json()
        assert len(page["items"]) <= 2
        pages.extend(page["items"])
        after = page["next_after"]
    assert pages == items

    tail = api.get(f"/api/v1/runs/{run_id}/events?after=3", headers=auth).json()["items"]
    assert tail == items[3:]
    # Last-Event-ID is read (and wins) as JSON too, and checked: never silently ignored.
    resumed = api.get(f"/api/v1/runs/{run_id}/events", headers={**auth, "Last-Event-ID": " 3 "})
    assert resumed.json()["items"] == items[3:]
    bad = api.get(f"/api/v1/runs/{run_id}/events", headers={**auth, "Last-Event-ID": "x|y"})
    assert assert_problem(bad, 422, "validation_error")["errors"][0]["type"] == "invalid_event_id"


def test_history_limit_is_checked(api: TestClient, auth: dict[str, str], worker: Worker) -> None:
    run_id = _finished_run(api, auth, worker)
    for query in ("limit=0", "limit=1001", "after=-1"):
        response = api.get(f"/api/v1/runs/{run_id}/events?{query}", headers=auth)
        assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("accept", [None, "text/event-stream"])
def test_history_of_another_tenant_is_404(
    api: TestClient,
    auth: dict[str, str],
    worker: Worker,
    new_tenant: NewTenant,
    new_key: NewKey,
    accept: str | None,
) -> None:
    run_id = _finished_run(api, auth, worker)
    other = {"Authorization": f"Bearer {new_key(new_tenant('globex')['id'])}"}
    if accept:
        other["Accept"] = accept
    for path in (f"/api/v1/runs/{run_id}/events", "/api/v1/runs/not-a-run/events"):
        assert_problem(api.get(path, headers=other), 404, "run_not_found")


def test_history_needs_runs_read(
    api: TestClient, tenant: dict[str, Any], auth: dict[str, str], worker: Worker, new_key: NewKey
) -> None:
    run_id = _finished_run(api, auth, worker)
    weak = {"Authorization": f"Bearer {new_key(tenant['id'], ['runs:write'])}"}
    for path in (f"/api/v1/runs/{run_id}/events", "/api/v1/runs/stream"):
        assert_problem(api.get(path, headers=weak), 403, "forbidden")
        assert_problem(api.get(path, headers={**weak, **SSE}), 403, "forbidden")
        assert_problem(api.get(path), 401, "unauthenticated")


# -- SSE: run history ----------------------------------------------------------


def test_stream_delivers_events_live_and_closes_after_the_terminal_one(
    api: TestClient,
    base_url: str,
    auth: dict[str, str],
    worker: Worker,
    clock: SkippingClock,
) -> None:
    run_id = _start(api, auth, PAUSING)
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SSEReader(response)
        first = reader.next_event()
        assert first is not None
        assert (first.id, first.event) == ("1", "run.created")
        assert json.loads(first.data)["type"] == "run.created"

        # The stream is open and idle; a worker now writes the first round.
        _work(worker)
        parked = reader.until("run.waiting")
        assert [e.event for e in parked][:2] == ["run.started", "step.started"]
        assert "step.waiting" in [e.event for e in parked]

        clock.advance(61)
        _work(worker)
        rest = reader.until("run.completed")
        assert reader.next() is None, "the stream must end after the terminal event"

    events = [first, *parked, *rest]
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
    for e in events:
        line = json.loads(e.data)
        assert line["type"] == e.event
        assert line["seq"] == int(e.id or 0)
    history = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    assert [json.loads(e.data) for e in events] == history


def test_stream_of_a_finished_run_sends_the_history_and_closes(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker
) -> None:
    run_id = _finished_run(api, auth, worker)
    history = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        reader = SSEReader(response)
        events = []
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert [json.loads(e.data) for e in events] == history


# A run whose wait times out after a minute: an event sent after that is a
# late line (`wait.late_event_ignored`), written after the run's terminal line.
WAITING: dict[str, Any] = {
    "name": "waiting",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello"}},
        {"key": "opened", "type": "wait_for_event", "event": "mail.open", "timeout": "PT1M"},
    ],
}
ANN = {"type": "email", "value": "ann@example.com"}


def _late_event(api: TestClient, auth: dict[str, str], event_id: str) -> None:
    """An awaited event, sent after the wait timed out."""
    sent = api.post(
        "/api/v1/events",
        json={"id": event_id, "name": "mail.open", "identity": ANN},
        headers=auth,
    )
    assert sent.status_code in (200, 202), sent.text


def _read_all(base_url: str, auth: dict[str, str], run_id: str) -> list[dict[str, Any]]:
    """Every line a stream of the run sends before it ends."""
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        reader = SSEReader(response)
        events = []
        while (event := reader.next_event()) is not None:
            events.append(event)
    return [json.loads(e.data) for e in events]


def test_stream_of_a_finished_run_sends_the_lines_after_its_terminal_line(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker, clock: SkippingClock
) -> None:
    run_id = _start(api, auth, WAITING, identity=ANN)
    _work(worker)
    clock.advance(61)
    _work(worker)  # the wait times out, the run completes
    _late_event(api, auth, "evt_late_1")
    _late_event(api, auth, "evt_late_2")
    history = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    types = [line["type"] for line in history]
    assert types[-3:] == ["run.completed", "wait.late_event_ignored", "wait.late_event_ignored"]

    assert _read_all(base_url, auth, run_id) == history
    # Resumed at the terminal line, the stream still sends what came after it.
    terminal = history[-3]["seq"]
    headers = {**auth, **SSE, "Last-Event-ID": str(terminal)}
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as response,
    ):
        reader = SSEReader(response)
        rest = []
        while (event := reader.next_event()) is not None:
            rest.append(json.loads(event.data))
    assert rest == history[-2:]


def test_a_live_stream_sends_a_line_written_just_after_the_terminal_line(
    app: FastAPI,
    api: TestClient,
    base_url: str,
    auth: dict[str, str],
    worker: Worker,
    clock: SkippingClock,
) -> None:
    app.state.streams = StreamSettings(
        ping_seconds=15, history_poll_seconds=0.02, history_linger_seconds=2.0
    )
    run_id = _start(api, auth, WAITING, identity=ANN)
    _work(worker)  # waiting for the event
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        reader = SSEReader(response)
        seen = reader.until("run.waiting")
        clock.advance(61)
        _work(worker)
        seen += reader.until("run.completed")
        started = time.monotonic()
        _late_event(api, auth, "evt_late")  # the event lost the race with the timeout
        seen += reader.until("wait.late_event_ignored")
        assert reader.next_event() is None, "the stream ends after its linger"
        ended = time.monotonic() - started
    assert ended < 4.0
    history = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    assert [json.loads(e.data) for e in seen] == history
    assert history[-1]["type"] == "wait.late_event_ignored"


@pytest.mark.parametrize("how", ["header", "query", "both"])
def test_resume_sends_only_later_events(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker, how: str
) -> None:
    run_id = _finished_run(api, auth, worker)
    history = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    headers = {**auth, **SSE}
    url = f"/api/v1/runs/{run_id}/events"
    if how in ("header", "both"):
        headers["Last-Event-ID"] = "3"
    if how == "query":
        url += "?after=3"
    if how == "both":
        url += "?after=1"  # Last-Event-ID wins: it is what a reconnecting browser sends
    with stream_client(base_url) as http, http.stream("GET", url, headers=headers) as response:
        reader = SSEReader(response)
        events = []
        while (event := reader.next_event()) is not None:
            events.append(event)
    assert [int(e.id or 0) for e in events] == [e["seq"] for e in history[3:]]


def test_resume_after_the_terminal_event_closes_at_once(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker
) -> None:
    run_id = _finished_run(api, auth, worker)
    last = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"][-1]["seq"]
    headers = {**auth, **SSE, "Last-Event-ID": str(last)}
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        reader = SSEReader(response)
        assert reader.next_event() is None


def test_bad_last_event_id_is_422(api: TestClient, auth: dict[str, str], worker: Worker) -> None:
    run_id = _finished_run(api, auth, worker)
    headers = {**auth, **SSE, "Last-Event-ID": "seven"}
    response = api.get(f"/api/v1/runs/{run_id}/events", headers=headers)
    assert_problem(response, 422, "validation_error")


def test_resume_of_a_live_run_gets_only_later_events(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker, clock: SkippingClock
) -> None:
    run_id = _start(api, auth, PAUSING)
    _work(worker)  # parked on the delay
    seen = api.get(f"/api/v1/runs/{run_id}/events", headers=auth).json()["items"]
    headers = {**auth, **SSE, "Last-Event-ID": str(seen[-1]["seq"])}
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as response,
    ):
        reader = SSEReader(response)
        clock.advance(61)
        _work(worker)
        later = reader.until("run.completed")
    assert int(later[0].id or 0) == seen[-1]["seq"] + 1
    assert later[0].event == "run.resumed"


def test_pings_follow_the_configured_interval(
    app: FastAPI, api: TestClient, base_url: str, auth: dict[str, str]
) -> None:
    app.state.streams = StreamSettings(ping_seconds=0.2, history_poll_seconds=0.02)
    run_id = _start(api, auth, PAUSING)  # pending: nobody works on it
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        reader = SSEReader(response)
        first = reader.next()
        assert first is not None
        assert first.event == "run.created"
        started = time.monotonic()
        pings = 0
        while pings < 3:
            item = reader.next()
            assert item is not None
            assert item.comment is not None, f"only pings may follow: {item}"
            pings += 1
        # Three pings at 0.2 s: well under a second (the default would be 45 s).
        assert time.monotonic() - started < 2.0


def test_a_client_that_goes_away_releases_the_stream(
    db: Database, api: TestClient, base_url: str, auth: dict[str, str]
) -> None:
    run_id = _start(api, auth, PAUSING)
    listeners_before = len(db._wakeup_listeners)
    with (
        stream_client(base_url) as http,
        http.stream("GET", f"/api/v1/runs/{run_id}/events", headers={**auth, **SSE}) as response,
    ):
        reader = SSEReader(response)  # held: dropping it would close the connection
        assert reader.next_event() is not None
        assert len(db._wakeup_listeners) == listeners_before + 1
    deadline = time.monotonic() + 5
    while len(db._wakeup_listeners) > listeners_before:
        assert time.monotonic() < deadline, "the stream did not end after the client left"
        time.sleep(0.02)


# -- SSE: run changes ------------------------------------------------------------


def _summaries(reader: SSEReader, until_run: str, status: str) -> list[tuple[str, dict[str, Any]]]:
    """`run` events up to the one of ``until_run`` in ``status``: (id, summary)."""
    out: list[tuple[str, dict[str, Any]]] = []
    while True:
        event = reader.next_event()
        assert event is not None, f"the stream ended early: {out}"
        assert event.event == "run", event
        summary = json.loads(event.data)
        out.append((event.id or "", summary))
        if summary["id"] == until_run and summary["status"] == status:
            return out


def test_runs_stream_follows_matching_runs_only(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker
) -> None:
    other = {**DEFINITION, "name": "other"}
    api.post("/api/v1/automations", json=DEFINITION, headers=auth)
    api.post("/api/v1/automations", json=other, headers=auth)
    _start(api, auth, DEFINITION)  # before the stream: not sent
    url = "/api/v1/runs/stream?filter[automation_name]=order-follow-up"
    with (
        stream_client(base_url) as http,
        http.stream("GET", url, headers={**auth, **SSE}) as response,
    ):
        assert response.status_code == 200
        reader = SSEReader(response)
        ready = reader.next_event()
        assert ready is not None
        assert ready.event == "ready"

        mine = _start(api, auth, DEFINITION)
        theirs = _start(api, auth, other)
        got = _summaries(reader, mine, "pending")
        _work(worker)
        got += _summaries(reader, mine, "completed")
        # Everything of `theirs` was stamped before this run was created, so it
        # would have come before it.
        marker = _start(api, auth, DEFINITION)
        got += _summaries(reader, marker, "pending")

    ids = [s["id"] for _, s in got]
    assert theirs not in ids
    assert [s["status"] for _, s in got if s["id"] == mine] == ["pending", "completed"]
    assert all(s["automation_name"] == "order-follow-up" for _, s in got)
    event_ids = [event_id for event_id, _ in got]
    assert all("|" in event_id for event_id in event_ids)
    assert event_ids == sorted(event_ids)


def test_runs_stream_resumes_after_last_event_id(
    api: TestClient, base_url: str, auth: dict[str, str], worker: Worker
) -> None:
    api.post("/api/v1/automations", json=DEFINITION, headers=auth)
    with stream_client(base_url) as http:
        with http.stream("GET", "/api/v1/runs/stream", headers={**auth, **SSE}) as response:
            reader = SSEReader(response)
            ready = reader.next_event()
            assert ready is not None
            assert ready.event == "ready"
            run_id = _start(api, auth, DEFINITION)
            (resume_id, pending), *_ = _summaries(reader, run_id, "pending")
        # Disconnected: the run completes meanwhile.
        _work(worker)
        headers = {**auth, **SSE, "Last-Event-ID": resume_id}
        with http.stream("GET", "/api/v1/runs/stream", headers=headers) as response:
            reader = SSEReader(response)
            first = reader.next_event()
            assert first is not None
            assert first.event == "run"
            assert json.loads(first.data)["id"] == run_id
            assert json.loads(first.data)["status"] == "completed"
            ready = reader.next_event()
            assert ready is not None
            assert ready.event == "ready"
            assert ready.id == first.id
    assert pending["status"] == "pending"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("status=bogus", {}),
        ("filter[created_after]=yesterday", {}),
        ("", {"Last-Event-ID": "not-a-position"}),
    ],
)
def test_runs_stream_refuses_bad_filters_and_positions(
    api: TestClient, auth: dict[str, str], query: str, headers: dict[str, str]
) -> None:
    response = api.get(f"/api/v1/runs/stream?{query}", headers={**auth, **SSE, **headers})
    assert_problem(response, 422, "validation_error")
