"""A real ``conveyor worker`` killed with SIGKILL while the SMTP server holds the email.

The message row is ``sending`` at the kill. After the lease expires another
worker takes the run over and sends the email again, under the same key: the
SMTP server sees exactly one more delivery (same ``Message-ID``) and the
message ends ``sent``. The duplicate window is the provider call alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.services import templates as template_service
from conveyor.services.runs import get_run_detail
from conveyor.store.db import Database
from conveyor.store.messaging_tables import messages
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.support.smtp_server import SmtpServer, running_smtp

LEASE_SECONDS = 3


def _start_worker(
    db: Database, name: str, smtp: SmtpServer, log_dir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_WORKER_ID": name,
        "CONVEYOR_LEASE_SECONDS": str(LEASE_SECONDS),
        "CONVEYOR_POLL_INTERVAL": "0.2",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        # The environment's channel defaults: this tenant overrides nothing.
        "CONVEYOR_EMAIL_PROVIDER": "smtp",
        "CONVEYOR_EMAIL_FROM": "shop@example.com",
        "CONVEYOR_SMTP_HOST": "127.0.0.1",
        "CONVEYOR_SMTP_PORT": str(smtp.port),
        "CONVEYOR_SMTP_STARTTLS": "false",
    }
    conveyor = Path(sys.executable).with_name("conveyor")
    with (log_dir / f"{name}.log").open("wb") as log:
        return subprocess.Popen([str(conveyor), "worker"], env=env, stdout=log, stderr=log)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _message_rows(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(select(messages)).mappings()]


@pytest.mark.slow
def test_a_worker_killed_during_the_smtp_call_costs_one_more_delivery(
    db: Database, tmp_path: Path
) -> None:
    tenant = make_tenant(db, "crash-send")
    with db.transaction() as conn:
        template_service.put_template(
            conn,
            tenant,
            "receipt",
            "email",
            {"subject": "Receipt", "text": "thanks"},
            now=datetime.now(UTC),
        )
    automation = make_automation(
        db,
        tenant,
        {
            "name": "receipt",
            "steps": [
                {
                    "key": "send",
                    "type": "send_email_template",
                    "template": "receipt",
                    "to": "olivia@example.com",
                }
            ],
        },
    )
    # The server holds the first DATA for a minute: the kill lands mid-call.
    with running_smtp(delay_first=60) as smtp:
        run_id = trigger(db, tenant, automation)
        first = _start_worker(db, "doomed", smtp, tmp_path)
        successor = None
        try:
            _wait_for(lambda: len(smtp.inbox.received) == 1, 60, "the first delivery to arrive")
            (row,) = _message_rows(db)
            assert row["status"] == "sending"  # committed before the provider call
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert [r["status"] for r in _message_rows(db)] == ["sending"]

            successor = _start_worker(db, "successor", smtp, tmp_path)
            _wait_for(
                lambda: [r["status"] for r in _message_rows(db)] == ["sent"],
                LEASE_SECONDS + 60,
                "the successor to send it",
            )
        finally:
            for worker in (first, successor):
                if worker is not None and worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in (first, successor):
                if worker is not None:
                    worker.wait(30)

        (row,) = _message_rows(db)
        key = row["idempotency_key"]
        # Exactly one more provider call, carrying the same key.
        assert smtp.inbox.message_ids() == [f"<{key}>", f"<{key}>"]
        assert row["last_event"] == "send"
        assert row["provider"] == "smtp"

    with db.read() as conn:
        detail = get_run_detail(conn, tenant, run_id)
    assert detail["status"] == "completed", (tmp_path / "successor.log").read_text()
    (step,) = detail["steps"]
    assert [a["status"] for a in step["attempts"]] == ["lost", "succeeded"]
    assert step["result"]["message_id"] == row["id"]
    assert step["result"]["reused"] is False
    assert [m["status"] for m in detail["sent_emails"]] == ["sent"]
