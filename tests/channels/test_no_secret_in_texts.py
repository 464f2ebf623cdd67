"""No error text, message row, history line or log line carries an endpoint's secrets.

Operator endpoints are named ``<operator webhook>`` / ``<operator smtp>``; a
tenant's URLs ``scheme://host/path``, without userinfo or query. Each case
fails a real send against a real local server (or a closed port), then reads
every text the database holds and every log record.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.channels.conftest import SendHarness
from tests.support.dump import dump_text
from tests.support.http_server import HitServer
from tests.support.smtp_server import free_port

TOKEN = "tok-9f8e7d6c"
PASSWORD = "pw-5a4b3c2d"
PUSH = {"title": "Hi", "body": "Order {{ trigger.payload.n }}", "data": {}}
MAIL = {"subject": "Receipt", "text": "Order {{ trigger.payload.n }}"}


def _run(h: SendHarness, step: dict[str, Any]) -> dict[str, Any]:
    h.template("note", "push", **PUSH)
    h.template("receipt", **MAIL)
    automation = h.automation({"name": "send", "steps": [{"key": "send", **step}]})
    run_id = h.trigger_for(automation, h.contact(push_targets=["device-a"]), {"n": 1})
    h.work()
    return h.step(run_id, "send")


def _clean(h: SendHarness, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    texts = {"database": dump_text(h.db), "logs": caplog.text}
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {where}"


PUSH_STEP = {"type": "send_push_template", "template": "note"}
MAIL_STEP = {"type": "send_email_template", "template": "receipt"}


@pytest.mark.parametrize("answer", ["status/500", "closed"])
def test_the_operators_webhook_is_never_named(
    harness: SendHarness, http_server: HitServer, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    caplog.set_level(logging.DEBUG)
    port = http_server.server_address[1] if answer != "closed" else free_port()
    url = f"http://hook:{PASSWORD}@127.0.0.1:{port}/{answer}/op-hook-path?token={TOKEN}"
    harness.use_settings(push_provider="webhook", push_webhook_url=url)
    step = _run(harness, PUSH_STEP)
    assert step["status"] == "failed"
    message = step["error"]["message"]
    assert message.startswith("push webhook <operator webhook> ")
    assert "127.0.0.1" not in message
    assert str(port) not in str(step["error"])
    _clean(harness, caplog, TOKEN, PASSWORD, "op-hook-path", f"127.0.0.1:{port}")


def test_the_operators_smtp_server_is_never_named(
    harness: SendHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens: the connection is refused
    harness.use_settings(
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_username="operator",
        smtp_password=PASSWORD,
    )
    step = _run(harness, MAIL_STEP)
    assert step["error"]["code"] == "smtp_unavailable"
    assert "<operator smtp>" in step["error"]["message"]
    assert "127.0.0.1" not in step["error"]["message"]
    _clean(harness, caplog, PASSWORD, str(port))


def test_a_tenants_webhook_is_shown_without_userinfo_or_query(
    harness: SendHarness, http_server: HitServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = http_server.url.removeprefix("http://")
    url = f"http://hook:{PASSWORD}@{host}/status/500/tenant-hook?token={TOKEN}"
    harness.channels(push={"provider": "webhook", "webhook_url": url})
    step = _run(harness, PUSH_STEP)
    assert step["error"]["code"] == "push_rejected"
    assert (
        step["error"]["message"]
        == f"push webhook http://{host}/status/500/tenant-hook answered 500"
    )
    assert http_server.hits[f"/status/500/tenant-hook?token={TOKEN}"] == 1  # it was delivered to
    _clean(harness, caplog, TOKEN, PASSWORD)


@pytest.mark.parametrize("answer", ["status/500", "closed"])
def test_an_http_request_url_is_shown_without_userinfo_or_query(
    harness: SendHarness, http_server: HitServer, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    caplog.set_level(logging.DEBUG)
    port = http_server.server_address[1] if answer != "closed" else free_port()
    url = f"http://u:{PASSWORD}@127.0.0.1:{port}/{answer}/call?token={TOKEN}"
    step = _run(harness, {"type": "http_request", "url": url})
    assert step["status"] == "failed"
    assert f"http://127.0.0.1:{port}/{answer}/call" in step["error"]["message"]
    assert TOKEN not in step["error"]["message"]
    assert PASSWORD not in step["error"]["message"]
    # The answer's body is the endpoint's own data (this one echoes its path):
    # the step error keeps it as received; no text of ours repeats the URL.
    for secret in (TOKEN, PASSWORD):
        assert secret not in caplog.text
