"""``send_push_template`` end to end: webhook and Apprise deliveries to a real local HTTP server."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from conveyor.channels.push import shown_target
from conveyor.settings import Settings
from tests.channels.conftest import SendHarness
from tests.support.http_server import HitServer

FOLLOW_UP = {
    "title": "Need anything else, {{ contact.attributes.first_name }}?",
    "body": "Your order {{ trigger.payload.order_id }} shipped <today>",
    "data": {"order": "{{ trigger.payload.order_id }}", "deep": ["{{ vars.kind }}"], "n": 3},
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The channel tests' settings, with Apprise's json:// allowed (the default allows none)."""
    return settings.model_copy(update={"apprise_schemes": "json"})


def _automation(harness: SendHarness, **step: Any) -> str:
    return harness.automation(
        {
            "name": "follow-up",
            "steps": [
                {
                    "key": "push",
                    "type": "send_push_template",
                    "template": "follow-up",
                    "vars": {"kind": "shipping"},
                    **step,
                }
            ],
        }
    )


def test_webhook_gets_one_post_per_target_with_the_idempotency_key(
    harness: SendHarness, http_server: HitServer
) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    harness.channels(push={"provider": "webhook", "webhook_url": f"{http_server.url}/ok/push"})
    contact = harness.contact(push_targets=["device-a", "device-b"])
    run_id = harness.trigger_for(_automation(harness), contact, {"order_id": "ord_9"})
    harness.work()

    step = harness.step(run_id, "push")
    assert step["status"] == "completed", step
    assert http_server.hits["/ok/push"] == 2
    bodies = http_server.bodies["/ok/push"]
    headers = http_server.headers_seen["/ok/push"]
    sent = {m["recipient"]: m for m in harness.messages()}
    assert set(sent) == {"device-a", "device-b"}
    for body, seen in zip(bodies, headers, strict=True):
        message = sent[body["to"]]
        assert seen["Idempotency-Key"] == message["idempotency_key"] == body["idempotency_key"]
        assert body["id"] == message["id"]
        assert body["title"] == "Need anything else, Olivia?"
        # Push parts are plain text: nothing is HTML-escaped.
        assert body["body"] == "Your order ord_9 shipped <today>"
        assert body["data"] == {"order": "ord_9", "deep": ["shipping"], "n": 3}
        assert body["run_id"] == run_id
        assert body["step_key"] == "push"
        assert body["contact_id"] == contact
        assert message["status"] == "sent"
        assert message["provider"] == "webhook"
    assert step["result"]["message_ids"] == [sent["device-a"]["id"], sent["device-b"]["id"]]


def test_apprise_delivers_to_a_json_endpoint(harness: SendHarness, http_server: HitServer) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    harness.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    target = f"json://bot:s3cr3t-token@{host}/ok/apprise"  # credentials in the URL
    run_id = harness.trigger_for(
        _automation(harness), harness.contact(push_targets=[target]), {"order_id": 5}
    )
    harness.work()
    step = harness.step(run_id, "push")
    assert step["status"] == "completed"
    # Delivered to the target as given (its credentials reached the server) ...
    auth = http_server.headers_seen["/ok/apprise"][0]["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == "bot:s3cr3t-token"
    # ... but recorded and shown without them.
    assert "s3cr3t" not in json.dumps(step)
    assert "s3cr3t" not in json.dumps(harness.messages(), default=str)
    assert step["result"]["messages"][0]["to"] == shown_target(target)
    assert shown_target(target).startswith(f"json://bot:****@{host}/ok/apprise")
    (body,) = http_server.bodies["/ok/apprise"]
    assert body["title"] == "Need anything else, Olivia?"
    assert body["message"] == "Your order 5 shipped <today>"
    (message,) = harness.messages()
    assert message["provider"] == "apprise"
    assert message["status"] == "sent"
    # The generic HTTP services of Apprise carry the key as a header too.
    assert (
        http_server.headers_seen["/ok/apprise"][0]["Idempotency-Key"]
        == (message["idempotency_key"])
    )


def test_apprise_failure_is_retryable_and_recorded(
    harness: SendHarness, http_server: HitServer
) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    harness.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    target = f"json://{host}/status/503/apprise"
    a = _automation(harness, to=[target], retry={"max_attempts": 2, "initial_delay": "PT5S"})
    run_id = harness.trigger_for(a, harness.contact(), {"order_id": 5})
    harness.work()
    assert harness.step(run_id, "push")["status"] == "pending"
    harness.advance(10)
    step = harness.step(run_id, "push")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "push_failed"
    assert step["attempt_count"] == 2
    assert http_server.hits["/status/503/apprise"] == 2
    (message,) = harness.messages()
    assert message["status"] == "failed"


def test_a_target_apprise_does_not_understand_fails_for_good(harness: SendHarness) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    harness.channels(push={"provider": "apprise"})
    a = _automation(harness, to="not a url", retry={"max_attempts": 3})
    run_id = harness.trigger_for(a, harness.contact(), {"order_id": 5})
    harness.work()
    step = harness.step(run_id, "push")
    assert step["error"]["code"] == "invalid_push_target"
    assert step["attempt_count"] == 1


def test_outbox_push_is_stored(harness: SendHarness) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    run_id = harness.trigger_for(
        _automation(harness), harness.contact(push_targets=["tok"]), {"order_id": 1}
    )
    harness.work()
    assert harness.detail(run_id)["status"] == "completed"
    (message,) = harness.messages()
    assert message["provider"] == "outbox"
    assert message["content"]["body"] == "Your order 1 shipped <today>"
    assert message["subject"] == "Need anything else, Olivia?"


def test_a_contact_without_push_targets_has_no_recipient(harness: SendHarness) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    run_id = harness.trigger_for(_automation(harness), harness.contact(push_targets=[]))
    harness.work()
    error = harness.step(run_id, "push")["error"]
    assert error["code"] == "missing_recipient"
    assert "no push targets" in error["message"]


def test_a_failed_target_is_resent_on_the_next_attempt_and_the_sent_one_is_not(
    harness: SendHarness, http_server: HitServer
) -> None:
    harness.template("follow-up", "push", **FOLLOW_UP)
    # The first POST fails (500), every later one succeeds.
    harness.channels(push={"provider": "webhook", "webhook_url": f"{http_server.url}/fail/1/p"})
    a = _automation(
        harness, to=["first", "second"], retry={"max_attempts": 2, "initial_delay": "PT5S"}
    )
    run_id = harness.trigger_for(a, harness.contact(), {"order_id": 1})
    harness.work()
    step = harness.step(run_id, "push")
    assert step["status"] == "pending"
    assert step["error"]["code"] == "push_rejected"
    harness.advance(10)
    step = harness.step(run_id, "push")
    assert step["status"] == "completed"
    targets = [b["to"] for b in http_server.bodies["/fail/1/p"]]
    assert targets == ["first", "second", "first"]
    first, second = (m for m in step["result"]["messages"])
    assert (first["reused"], second["reused"]) == (False, True)
    assert {m["status"] for m in harness.messages()} == {"sent"}
    assert len(harness.messages()) == 2


def test_targets_are_shown_without_credentials() -> None:
    assert shown_target("device-a") == "device-a"  # a device token is shown as it is
    shown = shown_target("tgram://123456789:AAbbCCddEEff/987654321")
    assert "AAbbCCddEEff" not in shown
    assert shown.startswith("tgram://")
    assert "?" not in shown  # Apprise's options are left out
    assert shown_target("nonsense://key:secret@host/x") == "nonsense://***"
