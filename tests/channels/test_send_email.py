"""``send_email_template`` end to end: a real worker, a real database, a real SMTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.channels.conftest import SendHarness, smtp_overrides, tls_dir
from tests.support.smtp_server import SmtpServer, running_smtp

RECEIPT = {
    "subject": "Your receipt, {{ contact.attributes.first_name }}",
    "text": "Order {{ trigger.payload.order_id }} for {{ vars.shop }}",
    "html": "<p>Order {{ trigger.payload.order_id }} for {{ vars.shop }}</p>",
}


def _automation(harness: SendHarness, **step: Any) -> str:
    return harness.automation(
        {
            "name": "receipt",
            "steps": [
                {
                    "key": "send_receipt",
                    "type": "send_email_template",
                    "template": "receipt",
                    "vars": {"shop": "<b>Shop</b>"},
                    **step,
                }
            ],
        }
    )


def test_smtp_receives_the_rendered_email_with_the_key_as_message_id(
    harness: SendHarness, smtp: SmtpServer
) -> None:
    harness.template("receipt", **RECEIPT)
    harness.channels(email=smtp_overrides(smtp))
    contact = harness.contact()
    run_id = harness.trigger_for(_automation(harness), contact, {"order_id": "ord_123"})
    harness.work()

    step = harness.step(run_id, "send_receipt")
    assert step["status"] == "completed", step
    (mail,) = smtp.inbox.received
    assert mail["Subject"] == "Your receipt, Olivia"
    assert mail["To"] == "olivia@example.com"
    assert mail["From"] == "Shop <shop@example.com>"
    assert smtp.inbox.envelopes == [("shop@example.com", ["olivia@example.com"])]
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None
    assert html is not None
    # HTML is escaped in the html part only.
    assert text.get_content().strip() == "Order ord_123 for <b>Shop</b>"
    assert html.get_content().strip() == "<p>Order ord_123 for &lt;b&gt;Shop&lt;/b&gt;</p>"

    (message,) = harness.messages()
    assert mail["Message-ID"] == f"<{message['idempotency_key']}>"
    assert message["status"] == "sent"
    assert message["last_event"] == "send"
    assert message["provider"] == "smtp"
    assert message["provider_message_id"] == mail["Message-ID"]
    assert message["idempotency_key"].startswith(f"{run_id}.")
    assert step["result"]["message_id"] == message["id"]
    assert step["result"]["reused"] is False
    assert step["result"]["template_version"] == 1


def test_smtp_auth_over_starttls(
    harness: SendHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_smtp(auth=("shop", "s3cret"), tls_dir=tls_dir(tmp_path)) as server:
        assert server.cert is not None
        # Trust the test's self-signed certificate the standard way (OpenSSL reads it).
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
        harness.template("receipt", **RECEIPT)
        harness.channels(
            email=smtp_overrides(
                server, smtp_starttls=True, smtp_username="shop", smtp_password="s3cret"
            )
        )
        run_id = harness.trigger_for(_automation(harness), harness.contact(), {"order_id": 7})
        harness.work()
        assert harness.step(run_id, "send_receipt")["status"] == "completed"
        assert len(server.inbox.received) == 1
        assert server.inbox.logins == ["shop"]


def test_a_wrong_smtp_password_fails_the_step_without_retry(
    harness: SendHarness, tmp_path: Path
) -> None:
    # AUTH without TLS: a test server's choice, which the operator allows here.
    harness.use_settings(smtp_allow_plaintext_auth=True)
    with running_smtp(auth=("shop", "s3cret")) as server:
        harness.template("receipt", **RECEIPT)
        harness.channels(email=smtp_overrides(server, smtp_username="shop", smtp_password="nope"))
        a = harness.automation(
            {
                "name": "receipt",
                "retry": {"max_attempts": 3},
                "steps": [
                    {
                        "key": "s",
                        "type": "send_email_template",
                        "template": "receipt",
                        "to": "a@b.co",
                        "vars": {"shop": "x"},
                    }
                ],
            }
        )
        run_id = harness.trigger_for(a, harness.contact(), {"order_id": 1})
        harness.work()
        step = harness.step(run_id, "s")
        assert step["status"] == "failed"
        assert step["error"]["code"] == "smtp_auth_failed"
        assert step["attempt_count"] == 1
        assert server.inbox.received == []
        (message,) = harness.messages()
        assert message["status"] == "failed"
        assert message["error"]["code"] == "smtp_auth_failed"


def test_outbox_stores_the_rendered_message_and_sends_nothing(harness: SendHarness) -> None:
    harness.template("receipt", **RECEIPT)
    run_id = harness.trigger_for(_automation(harness), harness.contact(), {"order_id": "o1"})
    harness.work()
    assert harness.detail(run_id)["status"] == "completed"
    (message,) = harness.messages()
    assert message["provider"] == "outbox"
    assert message["status"] == "sent"
    assert message["content"] == {
        "from": "Conveyor <conveyor@localhost>",
        "to": "olivia@example.com",
        "subject": "Your receipt, Olivia",
        "text": "Order o1 for <b>Shop</b>",
        "html": "<p>Order o1 for &lt;b&gt;Shop&lt;/b&gt;</p>",
    }


def test_a_missing_variable_fails_the_step_naming_it(
    harness: SendHarness, smtp: SmtpServer
) -> None:
    harness.template("receipt", subject="Hi {{ contact.attributes.nickname }}", text="x")
    harness.channels(email=smtp_overrides(smtp))
    run_id = harness.trigger_for(_automation(harness), harness.contact())
    harness.work()
    step = harness.step(run_id, "send_receipt")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "template_error"
    assert "nickname" in step["error"]["message"]
    assert "subject" in step["error"]["message"]
    assert smtp.inbox.received == []
    assert harness.messages() == []


def test_an_endless_template_fails_the_step_cleanly(harness: SendHarness) -> None:
    harness.template(
        "receipt",
        subject="s",
        text="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    run_id = harness.trigger_for(_automation(harness), harness.contact())
    harness.work()
    step = harness.step(run_id, "send_receipt")
    assert step["status"] == "failed"
    assert step["error"]["code"] == "template_timeout"
    assert harness.messages() == []


@pytest.mark.parametrize(
    ("contact_email", "why"),
    [(None, "has no email"), ("", "has no email")],
    ids=["null", "empty"],
)
def test_no_recipient_fails_with_a_clear_code(
    harness: SendHarness, contact_email: str | None, why: str
) -> None:
    harness.template("receipt", **RECEIPT)
    run_id = harness.trigger_for(_automation(harness), harness.contact(email=contact_email))
    harness.work()
    error = harness.step(run_id, "send_receipt")["error"]
    assert error["code"] == "missing_recipient"
    assert why in error["message"]


def test_a_run_without_a_contact_and_without_to_has_no_recipient(harness: SendHarness) -> None:
    harness.template("receipt", **RECEIPT)
    run_id = harness.trigger(_automation(harness))
    harness.work()
    error = harness.step(run_id, "send_receipt")["error"]
    assert error["code"] == "missing_recipient"
    assert "no contact" in error["message"]


def test_to_overrides_the_contact(harness: SendHarness, smtp: SmtpServer) -> None:
    harness.template("receipt", **RECEIPT)
    harness.channels(email=smtp_overrides(smtp))
    a = _automation(harness, to="{{ trigger.payload.email }}")
    run_id = harness.trigger_for(a, harness.contact(), {"order_id": 1, "email": "ops@example.com"})
    harness.work()
    assert harness.step(run_id, "send_receipt")["result"]["to"] == "ops@example.com"
    assert smtp.inbox.envelopes[0][1] == ["ops@example.com"]


def test_a_step_uses_the_latest_version_when_it_runs_and_records_it(harness: SendHarness) -> None:
    harness.template("receipt", subject="v1", text="one")
    a = _automation(harness)
    first = harness.trigger_for(a, harness.contact(), {"order_id": 1})
    harness.work()
    harness.clock.advance(60)
    v2 = harness.template("receipt", subject="v2", text="two")
    second = harness.trigger_for(a, harness.contact(email="ada@example.com"), {"order_id": 2})
    harness.work()
    one, two = harness.messages()
    assert (one["subject"], two["subject"]) == ("v1", "v2")
    assert two["template_version_id"] == v2["version_id"] != one["template_version_id"]
    assert harness.step(first, "send_receipt")["result"]["template_version"] == 1
    assert harness.step(second, "send_receipt")["result"]["template_version"] == 2


def test_a_push_template_is_refused_by_an_email_step(harness: SendHarness) -> None:
    harness.template("receipt", "push", body="hello")
    run_id = harness.trigger_for(_automation(harness), harness.contact())
    harness.work()
    assert harness.step(run_id, "send_receipt")["error"]["code"] == "template_channel_mismatch"


def test_an_unknown_template_fails_the_step(harness: SendHarness) -> None:
    run_id = harness.trigger_for(_automation(harness), harness.contact())
    harness.work()
    assert harness.step(run_id, "send_receipt")["error"]["code"] == "template_not_found"
