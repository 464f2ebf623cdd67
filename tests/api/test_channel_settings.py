"""``/api/v1/settings/channels``: per-tenant channel overrides; secrets are write-only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import TestClient, assert_problem

URL = "/api/v1/settings/channels"


def test_defaults_come_from_the_server_settings(client: TestClient, auth: dict[str, str]) -> None:
    body = client.get(URL, headers=auth).json()
    assert body["email"] == {
        "provider": "outbox",
        "from": "Conveyor <conveyor@localhost>",
        "smtp_host": None,
        "smtp_port": 587,
        "smtp_username": None,
        "smtp_password_set": False,
        "smtp_starttls": True,
    }
    assert body["push"] == {"provider": "outbox", "webhook_url": None}
    assert body["overridden"] == {"email": [], "push": []}
    assert body["updated_at"] is None


def test_put_overrides_and_never_shows_the_password(
    client: TestClient, auth: dict[str, str]
) -> None:
    put = client.put(
        URL,
        json={
            "email": {
                "provider": "smtp",
                "from": "Shop <shop@example.com>",
                "smtp_host": "mail.example.com",
                "smtp_username": "shop",
                "smtp_password": "s3cret",
            },
            "push": {"provider": "webhook", "webhook_url": "https://push.example.com/hook"},
        },
        headers=auth,
    )
    assert put.status_code == 200, put.text
    assert "s3cret" not in put.text
    body = client.get(URL, headers=auth).json()
    assert "s3cret" not in str(body)
    assert body["email"]["provider"] == "smtp"
    assert body["email"]["smtp_host"] == "mail.example.com"
    assert body["email"]["smtp_port"] == 587  # not overridden: the default
    assert body["email"]["smtp_password_set"] is True
    assert body["overridden"]["email"] == [
        "from",
        "provider",
        "smtp_host",
        "smtp_password",
        "smtp_username",
    ]
    assert body["push"] == {"provider": "webhook", "webhook_url": "https://push.example.com/hook"}
    assert body["updated_at"] is not None

    # A later PUT without the password keeps it; the rest is replaced.
    again = client.put(
        URL, json={"email": {"provider": "smtp", "smtp_host": "other.example.com"}}, headers=auth
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["email"]["smtp_password_set"] is True
    assert body["email"]["smtp_username"] is None
    assert body["push"]["provider"] == "outbox"
    # null removes it.
    cleared = client.put(URL, json={"email": {"smtp_password": None}}, headers=auth).json()
    assert cleared["email"]["smtp_password_set"] is False
    assert cleared["email"]["provider"] == "outbox"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"email": {"provider": "smtp"}}, ["body", "email"]),
        ({"push": {"provider": "webhook"}}, ["body", "push"]),
    ],
    ids=["smtp-without-host", "webhook-without-url"],
)
def test_a_configuration_that_cannot_send_is_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], loc: list[str]
) -> None:
    problem = assert_problem(client.put(URL, json=body, headers=auth), 422, "validation_error")
    assert [e["loc"] for e in problem["errors"]] == [loc]
    assert client.get(URL, headers=auth).json()["overridden"] == {"email": [], "push": []}


@pytest.mark.parametrize(
    "body",
    [
        {"email": {"provider": "carrier-pigeon"}},
        {"email": {"from": "not an address"}},
        {"email": {"smtp_port": 70000}},
        {"push": {"webhook_url": "ftp://x"}},
        {"email": {"unknown": 1}},
    ],
    ids=["provider", "from", "port", "url", "unknown-field"],
)
def test_invalid_values_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    assert_problem(client.put(URL, json=body, headers=auth), 422, "validation_error")


def test_settings_are_per_tenant(
    client: TestClient, auth: dict[str, str], new_tenant: Any, new_key: Any
) -> None:
    push = {"provider": "webhook", "webhook_url": "https://hooks.example/push"}
    client.put(URL, json={"push": push}, headers=auth)
    other = {"Authorization": f"Bearer {new_key(new_tenant('other')['id'])}"}
    assert client.get(URL, headers=other).json()["push"]["provider"] == "outbox"
    assert client.get(URL, headers=auth).json()["push"]["provider"] == "webhook"
