"""A real uvicorn server in a thread, and a small SSE reader, for streaming tests.

An in-process ASGI transport buffers a response until it ends, so a live
stream can only be tested over a real socket.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from conveyor.api.app import create_app
from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.testing.factories import make_tenant

READ_TIMEOUT = 5.0  # every read of a stream gives up after this: a test never hangs


@contextmanager
def live_server(app: FastAPI, **options: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 on a free port; yield its base URL.

    ``options`` are more ``uvicorn.Config`` arguments (host, port and log level stay the test's).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        **{k: v for k, v in options.items() if k not in ("host", "port", "log_level")},
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass(frozen=True)
class Served:
    """What ``served_with_worker`` started: its database, base URL, tenant and all-scopes key."""

    db: Database
    url: str
    key: str
    tenant: str


@contextmanager
def served_with_worker(
    template: Path, folder: Path, label: str, **settings: Any
) -> Iterator[Served]:
    """A copy of the migrated SQLite ``template`` in ``folder``, served with a worker running.

    The tenant ``acme`` gets an all-scopes key labelled ``label``; ``settings``
    are more ``Settings`` fields (the worker polls every 50 ms).
    """
    path = folder / "live.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    db = Database(url)
    tenant = make_tenant(db, "acme")
    with db.transaction() as conn:
        _, key = key_service.create_key(
            conn, tenant_id=tenant, scopes=ALL_SCOPES, label=label, now=SystemClock().now()
        )
    config = Settings(database_url=url, poll_interval=0.05, **settings)
    worker = Worker(db, config)
    thread = threading.Thread(target=asyncio.run, args=(worker.serve(shutdown_grace=1),))
    thread.start()
    try:
        with live_server(create_app(config, db=db)) as base:
            yield Served(db, base, key, tenant)
    finally:
        worker.stop()
        thread.join(10)
        db.dispose()


@dataclass
class Event:
    """One server-sent event, or a comment (``comment`` set, the rest empty)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: str | None = None
    fields: list[str] = field(default_factory=list)


class SSEReader:
    """Reads events off a streaming httpx response, one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next(self) -> Event | None:
        """The next event or comment; None when the stream has ended."""
        current = Event()
        data: list[str] = []
        for line in self._lines:
            if line == "":
                if current.fields:
                    current.data = "\n".join(data)
                    return current
                continue
            if line.startswith(":"):
                if not current.fields:
                    return Event(comment=line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            current.fields.append(name)
            if name == "event":
                current.event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                current.id = value
        return None

    def next_event(self) -> Event | None:
        """The next event, skipping comments (pings); None at the end."""
        while True:
            event = self.next()
            if event is None or event.comment is None:
                return event

    def until(self, event_type: str) -> list[Event]:
        """Events up to and including the first of ``event_type``."""
        seen: list[Event] = []
        while True:
            event = self.next_event()
            assert event is not None, f"the stream ended before {event_type}: {seen}"
            seen.append(event)
            if event.event == event_type:
                return seen


def stream_client(base_url: str) -> httpx.Client:
    """An httpx client whose every read times out after ``READ_TIMEOUT``."""
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(READ_TIMEOUT))
