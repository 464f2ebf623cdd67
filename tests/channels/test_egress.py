"""Sends under the egress policy: a tenant's webhook, SMTP server and Apprise targets.

A tenant's endpoints are checked, the operator's (``CONVEYOR_*``) are trusted.
The local servers count connections, so "refused" means none was opened.
"""

from __future__ import annotations

from typing import Any

from conveyor.clock import FakeClock
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.channels.conftest import SendHarness, smtp_overrides
from tests.support.http_server import LOCAL, HitServer
from tests.support.smtp_server import SmtpServer

PUSH = {"title": "Hi", "body": "Order {{ trigger.payload.n }}", "data": {}}
MAIL = {"subject": "Receipt", "text": "Order {{ trigger.payload.n }}"}
# Loopback written every way an attacker would, and a name that resolves to it.
LOOPBACK = ("127.0.0.1", "localhost", "2130706433", "0x7f.1", "017700000001", "127.1")


def _harness(db: Database, clock: FakeClock, **settings: Any) -> SendHarness:
    url = db.url.render_as_string(hide_password=False)
    return SendHarness(db, clock, Settings(database_url=url, **settings))


def _send(h: SendHarness, step_type: str, template: str, **step: Any) -> dict[str, Any]:
    """Run one send step about a contact with push targets; return the step."""
    automation = h.automation(
        {
            "name": "send",
            "steps": [
                {
                    "key": "send",
                    "type": step_type,
                    "template": template,
                    "retry": {"max_attempts": 3},
                    **step,
                }
            ],
        }
    )
    run_id = h.trigger_for(automation, h.contact(push_targets=["device-a"]), {"n": 7})
    h.work()
    return h.step(run_id, "send")


def _push(h: SendHarness, **step: Any) -> dict[str, Any]:
    h.template("note", "push", **PUSH)
    return _send(h, "send_push_template", "note", **step)


def _mail(h: SendHarness) -> dict[str, Any]:
    h.template("receipt", **MAIL)
    return _send(h, "send_email_template", "receipt")


def _refused(step: dict[str, Any]) -> None:
    assert step["status"] == "failed", step
    assert step["error"]["code"] == "egress_denied", step["error"]
    assert step["attempt_count"] == 1  # not retried


def _each_refused(h: SendHarness, automation: str, configs: list[dict[str, Any]]) -> None:
    """For each tenant configuration, one run of ``automation``: its send is refused."""
    contact = h.contact(push_targets=["device-a"])
    for i, config in enumerate(configs):
        h.channels(**config)
        run_id = h.trigger_for(automation, contact, {"n": i})
        h.work()
        _refused(h.step(run_id, "send"))


def test_a_tenants_webhook_to_loopback_is_refused_in_every_form(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock)
    h.template("note", "push", **PUSH)
    port = http_server.server_address[1]
    hosts = [*LOOPBACK, "[::ffff:127.0.0.1]"]
    automation = h.automation(
        {
            "name": "push",
            "steps": [{"key": "send", "type": "send_push_template", "template": "note"}],
        }
    )
    configs = [
        {"push": {"provider": "webhook", "webhook_url": f"http://{host}:{port}/ok/push"}}
        for host in hosts
    ]
    _each_refused(h, automation, configs)
    assert http_server.connections == 0


def test_a_tenants_webhook_is_delivered_once_its_address_is_allowed(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock, egress_allow=LOCAL)
    h.channels(push={"provider": "webhook", "webhook_url": f"{http_server.url}/ok/push"})
    assert _push(h)["status"] == "completed"
    assert http_server.hits["/ok/push"] == 1


def test_the_operators_webhook_is_trusted(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(
        db, clock, push_provider="webhook", push_webhook_url=f"{http_server.url}/ok/operator"
    )
    assert _push(h)["status"] == "completed"
    assert http_server.hits["/ok/operator"] == 1


def test_a_tenants_smtp_server_on_loopback_is_refused_in_every_form(
    db: Database, clock: FakeClock, smtp: SmtpServer
) -> None:
    h = _harness(db, clock)
    h.template("receipt", **MAIL)
    automation = h.automation(
        {
            "name": "mail",
            "steps": [{"key": "send", "type": "send_email_template", "template": "receipt"}],
        }
    )
    hosts = [*LOOPBACK, "::ffff:127.0.0.1"]
    _each_refused(
        h, automation, [{"email": smtp_overrides(smtp, smtp_host=host)} for host in hosts]
    )
    assert smtp.inbox.connections == 0


def test_a_tenants_smtp_server_is_used_once_its_address_is_allowed(
    db: Database, clock: FakeClock, smtp: SmtpServer
) -> None:
    h = _harness(db, clock, egress_allow=LOCAL)
    h.channels(email=smtp_overrides(smtp))
    assert _mail(h)["status"] == "completed"
    assert len(smtp.inbox.received) == 1


def test_the_operators_smtp_server_is_trusted_but_not_when_a_tenant_names_it(
    db: Database, clock: FakeClock, smtp: SmtpServer
) -> None:
    operator = {
        "email_provider": "smtp",
        "email_from": "shop@example.com",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_starttls": False,
    }
    h = _harness(db, clock, **operator)
    h.template("receipt", **MAIL)
    automation = h.automation(
        {
            "name": "mail",
            "steps": [{"key": "send", "type": "send_email_template", "template": "receipt"}],
        }
    )
    contact = h.contact()
    first = h.trigger_for(automation, contact, {"n": 1})
    h.work()
    assert h.step(first, "send")["status"] == "completed"
    assert len(smtp.inbox.received) == 1
    # The same server named by the tenant is the tenant's endpoint, and checked.
    h.channels(email={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_starttls": False})
    connections = smtp.inbox.connections
    second = h.trigger_for(automation, contact, {"n": 2})
    h.work()
    assert h.step(second, "send")["error"]["code"] == "egress_denied"
    assert smtp.inbox.connections == connections


def test_apprise_is_unavailable_until_the_operator_allows_its_schemes(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    # Chosen while the operator allowed a scheme; the operator then allowed none.
    h = _harness(db, clock, egress_allow=LOCAL, apprise_schemes="json")
    h.channels(push={"provider": "apprise"})
    h.use_settings(apprise_schemes=None)
    host = http_server.url.removeprefix("http://")
    step = _push(h, to=f"json://{host}/ok/apprise")
    assert step["error"]["code"] == "apprise_scheme_not_allowed"
    assert step["attempt_count"] == 1
    assert http_server.connections == 0


def test_apprise_follows_no_redirect(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    # What a redirect leads to was never checked: even a target asking for
    # redirects (?redirect=yes) gets the 302 as its answer.
    h = _harness(db, clock, egress_allow=LOCAL, apprise_schemes="json")
    h.channels(push={"provider": "apprise"})
    host = http_server.url.removeprefix("http://")
    step = _push(h, to=f"json://{host}/redirect/elsewhere?redirect=yes", retry=None)
    assert step["status"] == "failed"
    assert step["error"]["code"] == "push_failed"
    assert http_server.hits["/redirect/elsewhere"] == 1
    assert http_server.hits["/ok/elsewhere"] == 0


def test_an_apprise_target_on_loopback_is_refused(
    db: Database, clock: FakeClock, http_server: HitServer
) -> None:
    h = _harness(db, clock, apprise_schemes="json")
    h.channels(push={"provider": "apprise"})
    port = http_server.server_address[1]
    h.template("note", "push", **PUSH)
    for i, host in enumerate(("127.0.0.1", "localhost", "2130706433")):
        automation = h.automation(
            {
                "name": f"apprise-{i}",
                "steps": [
                    {
                        "key": "send",
                        "type": "send_push_template",
                        "template": "note",
                        "to": f"json://{host}:{port}/ok/apprise",
                    }
                ],
            }
        )
        run_id = h.trigger_for(automation, h.contact(email=None), {"n": 1})
        h.work()
        _refused(h.step(run_id, "send"))
    assert http_server.connections == 0
