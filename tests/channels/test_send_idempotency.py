"""A send is never repeated by accident: retries, replays and re-runs reuse a `sent` message.

Receipts are counted at a real SMTP server and a real webhook.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.channels.conftest import SendHarness, smtp_overrides
from tests.support.http_server import HitServer
from tests.support.smtp_server import SmtpServer


def _two_step(harness: SendHarness, http_server: HitServer, fail_first: int = 1) -> str:
    """Send an email, then call a hook that fails its first ``fail_first`` calls."""
    return harness.automation(
        {
            "name": "receipt-then-crm",
            "steps": [
                {"key": "send_receipt", "type": "send_email_template", "template": "receipt"},
                {
                    "key": "notify_crm",
                    "type": "http_request",
                    "method": "POST",
                    "url": f"{http_server.url}/fail/{fail_first}/crm",
                },
            ],
        }
    )


@pytest.fixture
def failed_run(harness: SendHarness, smtp: SmtpServer, http_server: HitServer) -> str:
    """A run that sent its receipt, then failed on the next step."""
    harness.template("receipt", subject="Receipt {{ trigger.payload.n }}", text="t")
    harness.channels(email=smtp_overrides(smtp))
    run_id = harness.trigger_for(_two_step(harness, http_server), harness.contact(), {"n": 1})
    harness.work()
    assert harness.detail(run_id)["status"] == "failed"
    assert len(smtp.inbox.received) == 1
    return run_id


@pytest.mark.parametrize(
    ("mode", "kw"),
    [("from_failed", {}), ("from_step", {"step_key": "send_receipt"}), ("full", {})],
    ids=["from_failed", "from_step", "full"],
)
def test_a_retry_never_resends_a_sent_message(
    harness: SendHarness, smtp: SmtpServer, failed_run: str, mode: str, kw: dict[str, Any]
) -> None:
    retry_id = harness.retry(failed_run, mode, **kw)
    harness.work()
    detail = harness.detail(retry_id)
    assert detail["status"] == "completed"
    assert len(smtp.inbox.received) == 1  # still only the first receipt
    (message,) = harness.messages()
    step = next(s for s in detail["steps"] if s["key"] == "send_receipt")
    assert step["result"]["message_id"] == message["id"]
    if mode != "from_failed":  # executed again, and found the lineage's message sent
        assert step["result"]["reused"] is True
        assert step["reused_from"] is None
    # The retry's detail shows the message, which belongs to the first run.
    (linked,) = step["linked_emails"]
    assert linked["id"] == message["id"]
    assert linked["run_id"] == failed_run
    assert [m["id"] for m in detail["sent_emails"]] == [message["id"]]


def test_a_retry_of_a_retry_still_reuses(
    harness: SendHarness, smtp: SmtpServer, failed_run: str
) -> None:
    first = harness.retry(failed_run, "full")
    harness.work()
    second = harness.retry(first, "full")
    harness.work()
    assert harness.detail(second)["status"] == "completed"
    assert len(smtp.inbox.received) == 1


def test_resend_true_sends_again_under_a_new_key(
    harness: SendHarness, smtp: SmtpServer, failed_run: str
) -> None:
    retry_id = harness.retry(failed_run, "from_step", step_key="send_receipt", resend=True)
    harness.work()
    assert harness.detail(retry_id)["status"] == "completed"
    first, second = smtp.inbox.message_ids()
    assert first != second
    new, old = sorted(harness.messages(), key=lambda m: m["run_id"] != retry_id)
    assert new["run_id"] == retry_id
    assert old["run_id"] == failed_run
    assert new["idempotency_key"].startswith(f"{retry_id}.")
    assert second == f"<{new['idempotency_key']}>"
    assert first == f"<{old['idempotency_key']}>"


def test_a_failed_send_is_sent_by_the_retry_and_only_once(
    harness: SendHarness, http_server: HitServer
) -> None:
    harness.template("p", "push", body="hi")
    # The webhook answers 500 twice: the run fails (no retry policy), the
    # replay's attempt fails again, the next replay gets through.
    harness.channels(push={"provider": "webhook", "webhook_url": f"{http_server.url}/fail/2/h"})
    a = harness.automation(
        {
            "name": "p",
            "steps": [{"key": "p", "type": "send_push_template", "template": "p", "to": "t"}],
        }
    )
    run_id = harness.trigger_for(a, harness.contact())
    harness.work()
    first_replay = harness.retry(run_id)
    harness.work()
    second_replay = harness.retry(first_replay)
    harness.work()
    assert harness.detail(run_id)["status"] == "failed"
    assert harness.detail(first_replay)["status"] == "failed"
    assert harness.detail(second_replay)["status"] == "completed"
    third = harness.retry(second_replay, "full")
    harness.work()
    assert harness.detail(third)["status"] == "completed"
    assert http_server.hits["/fail/2/h"] == 3
    (message,) = harness.messages()  # one row per key, moved to the run that sent it
    assert message["status"] == "sent"
    assert message["run_id"] == second_replay
    keys = {h["Idempotency-Key"] for h in http_server.headers_seen["/fail/2/h"]}
    assert keys == {message["idempotency_key"]}


def test_run_detail_lists_emails_and_pushes_like_seed_001(
    harness: SendHarness, http_server: HitServer
) -> None:
    receipt = harness.template("receipt", subject="Your receipt", text="t")
    follow = harness.template("need-anything", "push", title="Need anything else?", body="b")
    harness.channels(push={"provider": "webhook", "webhook_url": f"{http_server.url}/ok/push"})
    contact = harness.contact(push_targets=["device-1"])
    a = harness.automation(
        {
            "name": "order-follow-up",
            "steps": [
                {"key": "send_receipt", "type": "send_email_template", "template": "receipt"},
                {
                    "key": "send_push_follow_up",
                    "type": "send_push_template",
                    "template": "need-anything",
                },
            ],
        }
    )
    run_id = harness.trigger_for(a, contact, {"order_id": "ord_123"})
    harness.work()
    detail = harness.detail(run_id)
    assert detail["status"] == "completed"
    (email,) = detail["sent_emails"]
    (push,) = detail["sent_push_notifications"]
    expected_email = {
        "subject": "Your receipt",
        "status": "sent",
        "last_event": "send",
        "automation_step_key": "send_receipt",
        "template_version_id": receipt["version_id"],
        "contact_id": contact,
    }
    assert expected_email.items() <= email.items()
    expected_push = {
        "title": "Need anything else?",
        "status": "sent",
        "last_event": "send",
        "automation_step_key": "send_push_follow_up",
        "template_version_id": follow["version_id"],
        "contact_id": contact,
    }
    assert expected_push.items() <= push.items()
    steps = {s["key"]: s for s in detail["steps"]}
    assert steps["send_receipt"]["linked_emails"] == [email]
    assert steps["send_push_follow_up"]["linked_push_notifications"] == [push]
    assert email["created_at"] is not None
    assert push["id"] in steps["send_push_follow_up"]["result"]["message_ids"]
