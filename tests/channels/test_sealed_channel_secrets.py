"""A tenant's SMTP password and webhook URL at rest: sealed, opened only to send, rotated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.settings import Settings
from conveyor.store import channel_settings as channel_store
from tests.channels.conftest import SendHarness, smtp_overrides
from tests.support.dump import dump_text
from tests.support.http_server import HitServer
from tests.support.smtp_server import SmtpServer, running_smtp

OLD_KEY = "old-secret-key-0123456789-abcdefghijklmnop"
NEW_KEY = "new-secret-key-0123456789-abcdefghijklmnop"
PASSWORD = "smtp-pw-7c6b5a49"
TOKEN = "hook-token-3e2d1c0b"
PUSH = {"title": "Hi", "body": "Order {{ trigger.payload.n }}", "data": {}}
MAIL = {"subject": "Receipt", "text": "Order {{ trigger.payload.n }}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A known secret key; AUTH without TLS to the test's SMTP server allowed."""
    return settings.model_copy(
        update={"secret_key": SecretStr(OLD_KEY), "smtp_allow_plaintext_auth": True}
    )


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    """The tenant's SMTP server, requiring its login."""
    with running_smtp(auth=("shop", PASSWORD)) as smtp:
        yield smtp


def _configure(h: SendHarness, smtp: SmtpServer, http: HitServer) -> None:
    creds = {"smtp_username": "shop", "smtp_password": PASSWORD}
    url = f"{http.url}/ok/hook?token={TOKEN}"
    h.channels(
        email=smtp_overrides(smtp, **creds), push={"provider": "webhook", "webhook_url": url}
    )


@pytest.fixture
def both(harness: SendHarness) -> str:
    """An automation sending an email, then a push notification, to the run's contact."""
    harness.template("receipt", **MAIL)
    harness.template("note", "push", **PUSH)
    return harness.automation(
        {
            "name": "both",
            "steps": [
                {"key": "mail", "type": "send_email_template", "template": "receipt"},
                {"key": "push", "type": "send_push_template", "template": "note", "depends_on": []},
            ],
        }
    )


def _send_both(h: SendHarness, automation: str, n: int) -> dict[str, dict[str, Any]]:
    """One run of ``automation`` about a new contact; its two steps."""
    contact = h.contact(email=f"olivia+{n}@example.com", push_targets=["device-a"])
    run_id = h.trigger_for(automation, contact, {"n": n})
    h.work()
    return {key: h.step(run_id, key) for key in ("mail", "push")}


def _rotate(h: SendHarness, key: str, old: str = "") -> Any:
    env = {
        "CONVEYOR_DATABASE_URL": h.db.url.render_as_string(hide_password=False),
        "CONVEYOR_SECRET_KEY": key,
        "CONVEYOR_SECRET_KEYS_OLD": old,
    }
    return CliRunner().invoke(app, ["secrets", "rotate"], env=env)


def test_the_secrets_reach_their_servers_and_no_table_holds_them(
    harness: SendHarness, server: SmtpServer, http_server: HitServer, both: str
) -> None:
    _configure(harness, server, http_server)
    steps = _send_both(harness, both, 0)
    assert [s["status"] for s in steps.values()] == ["completed", "completed"]
    assert server.inbox.logins == ["shop"]
    assert http_server.hits[f"/ok/hook?token={TOKEN}"] == 1
    dump = dump_text(harness.db)
    assert PASSWORD not in dump
    assert TOKEN not in dump
    assert dump.count("sealed:v1:") == 2


def test_rotation_reseals_them_and_a_worker_without_the_key_cannot_send(
    harness: SendHarness, server: SmtpServer, http_server: HitServer, both: str
) -> None:
    _configure(harness, server, http_server)
    missing = _rotate(harness, NEW_KEY)  # the old key not given: reported, not lost
    assert missing.exit_code == 1
    assert f"channel settings of tenant {harness.tenant}" in missing.stderr
    done = _rotate(harness, NEW_KEY, OLD_KEY)
    assert done.exit_code == 0, done.stderr
    assert "re-sealed: 1" in done.stdout
    assert "re-sealed: 0  already current: 1" in _rotate(harness, NEW_KEY, OLD_KEY).stdout

    harness.use_settings(secret_key=NEW_KEY)  # the new key alone opens them
    steps = _send_both(harness, both, 0)
    assert [s["status"] for s in steps.values()] == ["completed", "completed"]

    for key, code in ((OLD_KEY, "secret_unreadable"), (None, "secret_key_missing")):
        harness.use_settings(secret_key=key)
        connections = server.inbox.connections, http_server.connections
        steps = _send_both(harness, both, 1 if key else 2)
        for step in steps.values():
            assert step["status"] == "failed"
            assert step["error"]["code"] == code
            assert step["attempt_count"] == 1
        assert (server.inbox.connections, http_server.connections) == connections
    assert PASSWORD not in dump_text(harness.db)


def test_secrets_stored_in_clear_by_an_older_version_still_send_and_rotation_seals_them(
    harness: SendHarness, server: SmtpServer, http_server: HitServer, both: str
) -> None:
    email = smtp_overrides(server, smtp_username="shop", smtp_password=PASSWORD)
    push = {"provider": "webhook", "webhook_url": f"{http_server.url}/ok/hook?token={TOKEN}"}
    with harness.db.transaction() as conn:
        channel_store.put_overrides(
            conn, harness.tenant, email=email, push=push, now=harness.clock.now()
        )
    assert TOKEN in dump_text(harness.db)
    steps = _send_both(harness, both, 0)
    assert [s["status"] for s in steps.values()] == ["completed", "completed"]
    done = _rotate(harness, OLD_KEY)
    assert done.exit_code == 0, done.stderr
    assert "re-sealed: 1" in done.stdout
    dump = dump_text(harness.db)
    assert PASSWORD not in dump
    assert TOKEN not in dump
    assert [s["status"] for s in _send_both(harness, both, 1).values()] == [
        "completed",
        "completed",
    ]
