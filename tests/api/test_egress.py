"""Saving where outbound calls go: literal private addresses and denied hosts are 422.

Definitions, channel settings and contacts' push targets are judged when
saved, without a lookup; host names and templated URLs are judged again (on
what they resolve to) when a worker connects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor.engine.worker import Worker
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.messaging_tables import contacts
from conveyor.store.tables import automations
from tests.api.helpers import TestClient, assert_problem, count, make_client
from tests.support.http_server import LOCAL, running_server

AUTOMATIONS = "/api/v1/automations"
CHANNELS = "/api/v1/settings/channels"
CONTACTS = "/api/v1/contacts"


def _call(url: str, name: str = "call") -> dict[str, Any]:
    return {"name": name, "steps": [{"key": "call", "type": "http_request", "url": url}]}


def _denied(response: Any, *locs: list[Any]) -> None:
    body = assert_problem(response, 422, "egress_denied")
    assert [e["loc"] for e in body["errors"]] == list(locs)
    assert {e["type"] for e in body["errors"]} == {"egress_denied"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://localhost:9000/",
    ],
)
def test_a_literal_private_address_in_a_step_url_is_refused_at_save(
    db: Database, client: TestClient, auth: dict[str, str], url: str
) -> None:
    _denied(client.post(AUTOMATIONS, json=_call(url), headers=auth), ["steps", 0, "url"])
    assert count(db, automations) == 0


def test_a_change_to_a_private_url_is_refused_and_the_version_kept(
    client: TestClient, auth: dict[str, str]
) -> None:
    created = client.post(AUTOMATIONS, json=_call("https://crm.example/hook"), headers=auth)
    assert created.status_code == 201, created.text
    changed = client.put(
        f"{AUTOMATIONS}/call", json=_call("http://192.168.1.1/admin"), headers=auth
    )
    _denied(changed, ["steps", 0, "url"])
    assert client.get(f"{AUTOMATIONS}/call", headers=auth).json()["version"] == 1


def test_a_denied_host_name_is_refused_at_save(db: Database, auth: dict[str, str]) -> None:
    client = make_client(db, egress_deny="*.corp.example")
    _denied(
        client.post(AUTOMATIONS, json=_call("https://wiki.corp.example/x"), headers=auth),
        ["steps", 0, "url"],
    )
    ok = client.post(AUTOMATIONS, json=_call("https://corp.example.org/x"), headers=auth)
    assert ok.status_code == 201, ok.text


def test_an_allowed_address_saves(db: Database, auth: dict[str, str]) -> None:
    client = make_client(db, egress_allow=LOCAL)
    saved = client.post(AUTOMATIONS, json=_call("http://127.0.0.1:8080/hook"), headers=auth)
    assert saved.status_code == 201, saved.text


def test_a_templated_url_saves_and_is_refused_when_it_connects(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    definition = _call("{{ trigger.payload.url }}")
    assert client.post(AUTOMATIONS, json=definition, headers=auth).status_code == 201
    with running_server() as server:
        trigger = {"payload": {"url": f"{server.url}/ok/internal"}}
        run = client.post(f"{AUTOMATIONS}/call/trigger", json=trigger, headers=auth)
        assert run.status_code == 202, run.text
        settings = Settings(database_url=db.url.render_as_string(hide_password=False))
        asyncio.run(Worker(db, settings).run_until_idle())
        assert server.connections == 0
    with db.read() as conn:
        tenant_id = conn.execute(automations.select()).mappings().one()["tenant_id"]
        detail = get_run_detail(conn, tenant_id, run.json()["id"])
    assert detail["status"] == "failed"
    assert detail["last_error"]["code"] == "egress_denied"


def test_channel_settings_to_private_addresses_are_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "email": {"provider": "smtp", "smtp_host": "10.0.0.5"},
        "push": {"provider": "webhook", "webhook_url": "http://169.254.169.254/latest"},
    }
    _denied(
        client.put(CHANNELS, json=body, headers=auth),
        ["body", "email", "smtp_host"],
        ["body", "push", "webhook_url"],
    )
    assert client.get(CHANNELS, headers=auth).json()["overridden"] == {"email": [], "push": []}
    public = {
        "email": {"provider": "smtp", "smtp_host": "mail.example.com"},
        "push": {"provider": "webhook", "webhook_url": "https://push.example.com/hook"},
    }
    assert client.put(CHANNELS, json=public, headers=auth).status_code == 200


def test_apprise_cannot_be_chosen_while_the_server_allows_no_scheme(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    body = assert_problem(
        client.put(CHANNELS, json={"push": {"provider": "apprise"}}, headers=auth),
        422,
        "validation_error",
    )
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["body", "push", "provider"], "apprise_unavailable")
    ]
    allowed = make_client(db, apprise_schemes="ntfy,json")
    assert allowed.put(CHANNELS, json={"push": {"provider": "apprise"}}, headers=auth).is_success


def test_push_targets_that_are_urls_to_private_addresses_are_refused(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    targets = ["device-token", "json://127.0.0.1:8080/hook", "ntfys://ntfy.sh/topic"]
    body = {"email": "olivia@example.com", "push_targets": targets}
    _denied(client.post(CONTACTS, json=body, headers=auth), ["body", "push_targets", 1])
    assert count(db, contacts) == 0
    body["push_targets"] = [targets[0], targets[2]]
    created = client.post(CONTACTS, json=body, headers=auth)
    assert created.status_code == 201, created.text
    patch = {"push_targets": ["json://10.1.2.3/x"]}
    _denied(
        client.patch(f"{CONTACTS}/{created.json()['id']}", json=patch, headers=auth),
        ["body", "push_targets", 0],
    )
