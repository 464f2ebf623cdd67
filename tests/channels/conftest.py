"""Fixtures for send steps with real parts: a worker on a real database, SMTP and HTTP servers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from conveyor.clock import FakeClock
from conveyor.domain.ids import new_id
from conveyor.engine.control import Actor, retry_run
from conveyor.engine.worker import Worker
from conveyor.services import channels as channel_service
from conveyor.services import templates as template_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts, messages
from conveyor.store.tables import runs
from tests.engine.conftest import Harness
from tests.support.http_server import LOCAL, HitServer, running_server
from tests.support.smtp_server import SmtpServer, running_smtp


class SendHarness(Harness):
    """The engine harness plus templates, contacts, channel settings and messages."""

    def template(self, name: str, channel: str = "email", **content: Any) -> dict[str, Any]:
        with self.db.transaction() as conn:
            view, _ = template_service.put_template(
                conn, self.tenant, name, channel, content, now=self.clock.now()
            )
        return view

    def channels(
        self, email: dict[str, Any] | None = None, push: dict[str, Any] | None = None
    ) -> None:
        with self.db.transaction() as conn:
            channel_service.replace_channel_settings(
                conn,
                self.tenant,
                self.settings,
                email=email or {},
                push=push or {},
                now=self.clock.now(),
            )

    def use_settings(self, **changes: Any) -> None:
        """Restart the worker with these settings changed (an operator's restart)."""
        self.settings = Settings(**{**self.settings.model_dump(), **changes})
        self.worker = Worker(self.db, self.settings, clock=self.clock)

    def contact(
        self, email: str | None = "olivia@example.com", push_targets: list[str] | None = None
    ) -> str:
        contact_id = new_id()
        now = self.clock.now()
        with self.db.transaction() as conn:
            conn.execute(
                contacts.insert().values(
                    id=contact_id,
                    tenant_id=self.tenant,
                    email=email,
                    external_id=None,
                    push_targets=push_targets or [],
                    attributes={"first_name": "Olivia"},
                    created_at=now,
                    updated_at=now,
                )
            )
        return contact_id

    def trigger_for(
        self, automation: str, contact_id: str, payload: dict[str, Any] | None = None
    ) -> str:
        """Trigger a run about a contact (as identity resolution would have set it)."""
        run_id = self.trigger(automation, payload)
        with self.db.transaction() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(contact_id=contact_id))
        return run_id

    def retry(self, run_id: str, mode: str = "from_failed", **kw: Any) -> str:
        with self.db.transaction() as conn:
            run = retry_run(
                conn,
                self.tenant,
                run_id,
                mode=mode,  # type: ignore[arg-type]
                step_key=kw.get("step_key"),
                payload=None,
                version="original",
                resend=kw.get("resend", False),
                reason="test",
                actor=Actor(kind="user", id="test"),
                now=self.clock.now(),
            )
        return str(run["id"])

    def messages(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(messages)
                .where(messages.c.tenant_id == self.tenant)
                .order_by(messages.c.created_at, messages.c.id)
            ).mappings()
            return [dict(r) for r in rows]


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock(datetime(2026, 6, 8, 14, 15, tzinfo=UTC))


@pytest.fixture
def settings(db: Database) -> Settings:
    """Settings on the test database; channels default to the outbox.

    The local SMTP and HTTP servers' address is allowed explicitly.
    """
    return Settings(
        database_url=db.url.render_as_string(hide_password=False),
        lease_seconds=30,
        worker_id="test-worker",
        egress_allow=LOCAL,
    )


@pytest.fixture
def harness(db: Database, clock: FakeClock, settings: Settings) -> SendHarness:
    """A tenant, a worker and a fake clock over the parametrised database."""
    return SendHarness(db, clock, settings)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 (no TLS, no auth)."""
    with running_smtp() as server:
        yield server


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server on 127.0.0.1 that counts hits."""
    with running_server() as server:
        yield server


def smtp_overrides(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    """Channel overrides sending email through ``server``."""
    return {
        "provider": "smtp",
        "from": "Shop <shop@example.com>",
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_starttls": False,
        **extra,
    }


def tls_dir(tmp_path: Path) -> Path:
    """Where a test keeps its certificate."""
    path = tmp_path / "tls"
    path.mkdir()
    return path
