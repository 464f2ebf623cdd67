"""Push targets at rest: sealed in the database, masked everywhere, opened only to send."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.engine.worker import Worker
from conveyor.services import contacts as contact_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.channels.conftest import SendHarness
from tests.support.dump import dump_text
from tests.support.http_server import HitServer

OLD_KEY = "old-secret-key-0123456789-abcdefghijklmnop"
NEW_KEY = "new-secret-key-0123456789-abcdefghijklmnop"
SECRET = "s3cr3t-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Apprise's json:// allowed, and a known secret key."""
    return settings.model_copy(update={"apprise_schemes": "json", "secret_key": SecretStr(OLD_KEY)})


def _contact(harness: SendHarness, settings: Settings, targets: list[str]) -> dict[str, Any]:
    prepared = contact_service.prepare_targets(settings.vault(), harness.tenant, targets)
    fields = {"email": "olivia@example.com", "push_targets": prepared}
    with harness.db.transaction() as conn:
        view, _ = contact_service.upsert_contact(conn, harness.tenant, fields, harness.clock.now())
    return view


def _push(harness: SendHarness, **step: Any) -> str:
    harness.template("hello", "push", title="Hi", body="Hello")
    return harness.automation(
        {
            "name": "hello",
            "steps": [
                {"key": "show", "type": "set", "vars": {"targets": "{{ contact.push_targets }}"}},
                {"key": "push", "type": "send_push_template", "template": "hello", **step},
            ],
        }
    )


def _use_key(harness: SendHarness, settings: Settings, key: str) -> None:
    """Restart the harness's worker with only ``key``."""
    harness.settings = settings.model_copy(update={"secret_key": SecretStr(key)})
    harness.worker = Worker(harness.db, harness.settings, clock=harness.clock)


def _basic_auth(http_server: HitServer, path: str) -> list[str]:
    return [
        base64.b64decode(h["Authorization"].removeprefix("Basic ")).decode()
        for h in http_server.headers_seen[path]
    ]


def test_a_credential_reaches_the_provider_and_nothing_else(
    harness: SendHarness, settings: Settings, http_server: HitServer
) -> None:
    harness.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    target = f"json://bot:{SECRET}@{host}/ok/sealed"
    contact = _contact(harness, settings, [target])
    assert contact["push_targets"][0].startswith(f"json://bot:****@{host}/ok/sealed")

    run_id = harness.trigger_for(_push(harness), contact["id"])
    harness.work()
    assert harness.step(run_id, "push")["status"] == "completed", harness.step(run_id, "push")
    assert _basic_auth(http_server, "/ok/sealed") == [f"bot:{SECRET}"]
    # Expressions saw the masked form; the run, messages and every table hold no credential.
    shown = harness.step(run_id, "show")["result"]["targets"]
    assert shown == contact["push_targets"]
    dump = dump_text(harness.db)
    assert SECRET not in dump
    assert "sealed:v1:" in dump


def test_a_masked_target_in_to_means_the_contacts_own_target(
    harness: SendHarness, settings: Settings, http_server: HitServer
) -> None:
    harness.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    contact = _contact(harness, settings, [f"json://bot:{SECRET}@{host}/ok/chosen"])
    run_id = harness.trigger_for(_push(harness, to="{{ contact.push_targets[0] }}"), contact["id"])
    harness.work()
    assert harness.step(run_id, "push")["status"] == "completed"
    assert _basic_auth(http_server, "/ok/chosen") == [f"bot:{SECRET}"]


def test_rotation_reseals_under_the_new_key_and_the_old_key_can_go(
    harness: SendHarness, settings: Settings, db: Database, http_server: HitServer
) -> None:
    harness.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    contact = _contact(harness, settings, [f"json://bot:{SECRET}@{host}/ok/rotated"])
    url = db.url.render_as_string(hide_password=False)

    def rotate(key: str, old: str = "") -> Any:
        env = {
            "CONVEYOR_DATABASE_URL": url,
            "CONVEYOR_SECRET_KEY": key,
            "CONVEYOR_SECRET_KEYS_OLD": old,
        }
        return CliRunner().invoke(app, ["secrets", "rotate"], env=env)

    # Without the old key, the sealed target is reported, not lost.
    missing = rotate(NEW_KEY)
    assert missing.exit_code == 1
    assert f"contact {contact['id']}" in missing.stderr
    done = rotate(NEW_KEY, OLD_KEY)
    assert done.exit_code == 0, done.stderr
    assert "re-sealed: 1" in done.stdout
    assert "re-sealed: 0  already current: 1" in rotate(NEW_KEY, OLD_KEY).stdout

    # The worker now needs only the new key.
    _use_key(harness, settings, NEW_KEY)
    automation = _push(harness)
    run_id = harness.trigger_for(automation, contact["id"])
    harness.work()
    assert harness.step(run_id, "push")["status"] == "completed"
    assert _basic_auth(http_server, "/ok/rotated") == [f"bot:{SECRET}"]

    # A worker with only the old key cannot open it: the step fails for good, saying why.
    _use_key(harness, settings, OLD_KEY)
    run_id = harness.trigger_for(automation, contact["id"])
    harness.work()
    step = harness.step(run_id, "push")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "secret_unreadable"
    assert SECRET not in dump_text(db)


def test_targets_stored_in_clear_by_an_older_version_are_sealed_by_rotation(
    harness: SendHarness, db: Database
) -> None:
    contact_id = harness.contact(push_targets=[f"json://bot:{SECRET}@push.example.com/x", "tok"])
    assert SECRET in dump_text(db)
    env = {
        "CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False),
        "CONVEYOR_SECRET_KEY": NEW_KEY,
    }
    result = CliRunner().invoke(app, ["secrets", "rotate"], env=env)
    assert result.exit_code == 0, result.stderr
    assert "re-sealed: 1" in result.stdout
    assert SECRET not in dump_text(db)
    with db.read() as conn:
        view = contact_service.get_contact(conn, harness.tenant, contact_id)
    assert view["push_targets"] == ["json://bot:****@push.example.com/x", "tok"]
