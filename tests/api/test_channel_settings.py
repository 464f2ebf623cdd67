"""``/api/v1/settings/channels``: a tenant's own settings; defaults and secrets never shown."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.store.db import Database
from conveyor.store.messaging_tables import channel_settings
from tests.api.helpers import TestClient, assert_problem, count, make_client
from tests.support.dump import dump_text

URL = "/api/v1/settings/channels"
# The operator's endpoints and credentials: none may reach a tenant.
OPERATOR = {
    "email_provider": "smtp",
    "email_from": "Ops <ops@relay-operator.example>",
    "smtp_host": "relay.operator-internal.example",
    "smtp_port": 2525,
    "smtp_username": "operator-user",
    "smtp_password": "operator-pw-0a1b2c",
    "push_provider": "webhook",
    "push_webhook_url": "https://ops:hook-pw-3d4e@hooks.operator-internal.example/p?token=op-tok-5f6a",
}
OPERATOR_TEXTS = [
    "relay-operator.example",
    "operator-internal",
    "2525",
    "operator-user",
    "operator-pw-0a1b2c",
    "hook-pw-3d4e",
    "op-tok-5f6a",
]
SMTP = {"provider": "smtp", "smtp_host": "mail.shop.example", "smtp_port": 587}
CREDS = {"smtp_username": "shop", "smtp_password": "shop-pw-1234"}
HOOK = "https://hooks.shop.example/push?token=shop-tok-9876"


@pytest.fixture
def operator_client(db: Database) -> TestClient:
    """A server whose operator configured every channel default."""
    return make_client(db, **OPERATOR)


def _put(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.put(URL, json=body, headers=auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_server_defaults_are_never_shown(
    operator_client: TestClient, auth: dict[str, str]
) -> None:
    response = operator_client.get(URL, headers=auth)
    body = response.json()
    assert body["email"] == {
        "provider": None,
        "from": None,
        "smtp_host": None,
        "smtp_port": None,
        "smtp_username": None,
        "smtp_password_set": False,
        "smtp_starttls": None,
    }
    assert body["push"] == {"provider": None, "webhook_url_set": False}
    assert body["defaults"] == {
        "email": [
            "provider",
            "from",
            "smtp_host",
            "smtp_port",
            "smtp_starttls",
            "smtp_username",
            "smtp_password",
        ],
        "push": ["provider", "webhook_url"],
    }
    assert body["overridden"] == {"email": [], "push": []}
    assert body["updated_at"] is None
    # A tenant setting only its provider still sees none of the operator's values.
    put = operator_client.put(URL, json={"email": {"provider": "outbox"}}, headers=auth)
    for text in (response.text, put.text, operator_client.get(URL, headers=auth).text):
        for secret in OPERATOR_TEXTS:
            assert secret not in text


def test_the_tenants_own_values_show_and_its_secrets_never(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    email = {**SMTP, **CREDS, "from": "Shop <shop@shop.example>"}
    put = client.put(
        URL,
        json={"email": email, "push": {"provider": "webhook", "webhook_url": HOOK}},
        headers=auth,
    )
    assert put.status_code == 200, put.text
    got = client.get(URL, headers=auth)
    for text in (put.text, got.text, dump_text(db)):
        assert "shop-pw-1234" not in text
        assert "shop-tok-9876" not in text
    body = got.json()
    assert body["email"] == {
        "provider": "smtp",
        "from": "Shop <shop@shop.example>",
        "smtp_host": "mail.shop.example",
        "smtp_port": 587,
        "smtp_username": "shop",
        "smtp_password_set": True,
        "smtp_starttls": True,  # a tenant's server: STARTTLS unless it says otherwise
    }
    assert body["push"] == {"provider": "webhook", "webhook_url_set": True}
    assert body["defaults"] == {"email": [], "push": []}
    assert body["overridden"]["push"] == ["provider", "webhook_url"]
    assert body["updated_at"] is not None


def test_write_only_values_are_kept_while_their_server_stays_the_same(
    client: TestClient, auth: dict[str, str]
) -> None:
    _put(client, auth, email={**SMTP, **CREDS}, push={"provider": "webhook", "webhook_url": HOOK})
    # Saved back as read (no secrets): both kept.
    kept = _put(client, auth, email={**SMTP, "smtp_username": "shop"}, push={"provider": "webhook"})
    assert kept["email"]["smtp_password_set"] is True
    assert kept["push"]["webhook_url_set"] is True
    # A new host (or port, or STARTTLS choice) drops the password unless it is given again.
    moved = {**SMTP, "smtp_host": "mail.elsewhere.example", "smtp_username": "shop"}
    problem = assert_problem(
        client.put(URL, json={"email": moved}, headers=auth), 422, "validation_error"
    )
    assert "give it again" in problem["errors"][0]["msg"]
    for change in ({"smtp_port": 2587}, {"smtp_starttls": False}, {"smtp_host": "other.example"}):
        dropped = _put(client, auth, email={**SMTP, **change})
        assert dropped["email"]["smtp_password_set"] is False
        _put(client, auth, email={**SMTP, **CREDS})
    given = _put(client, auth, email={**moved, "smtp_password": "new-pw-5678"})
    assert given["email"]["smtp_password_set"] is True
    # null removes.
    cleared = _put(
        client,
        auth,
        email={**moved, "smtp_username": None, "smtp_password": None},
        push={"webhook_url": None},
    )
    assert cleared["email"]["smtp_password_set"] is False
    assert cleared["push"] == {"provider": None, "webhook_url_set": False}


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"email": {"provider": "smtp"}}, ["body", "email"], "incomplete_channel"),
        ({"push": {"provider": "webhook"}}, ["body", "push"], "incomplete_channel"),
        ({"email": {"smtp_port": 2525}}, ["body", "email"], "incomplete_channel"),
        (
            {"email": {"smtp_username": "me", "smtp_password": "pw"}},
            ["body", "email"],
            "incomplete_channel",
        ),
        ({"email": {**SMTP, "smtp_username": "me"}}, ["body", "email"], "incomplete_channel"),
        (
            {"email": {**SMTP, **CREDS, "smtp_starttls": False}},
            ["body", "email", "smtp_starttls"],
            "plaintext_auth",
        ),
    ],
    ids=[
        "smtp-without-host",
        "webhook-without-url",
        "port-only",
        "credentials-only",
        "username-without-password",
        "auth-in-clear",
    ],
)
def test_a_configuration_that_cannot_send_is_422(
    db: Database,
    client: TestClient,
    auth: dict[str, str],
    body: dict[str, Any],
    loc: list[str],
    kind: str,
) -> None:
    problem = assert_problem(client.put(URL, json=body, headers=auth), 422, "validation_error")
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(loc, kind)]
    assert count(db, channel_settings) == 0


def test_auth_in_clear_is_allowed_when_the_operator_says_so(
    db: Database, auth: dict[str, str]
) -> None:
    client = make_client(db, smtp_allow_plaintext_auth=True)
    _put(client, auth, email={**SMTP, **CREDS, "smtp_starttls": False})


@pytest.mark.parametrize(
    "body",
    [
        {"email": {"provider": "carrier-pigeon"}},
        {"email": {"from": "not an address"}},
        {"email": {"from": "a@shop.example, b@bank.example"}},
        {"email": {"smtp_port": 70000}},
        {"push": {"webhook_url": "ftp://x"}},
        {"email": {"unknown": 1}},
    ],
    ids=["provider", "from", "two-senders", "port", "url", "unknown-field"],
)
def test_invalid_values_are_422(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    assert_problem(client.put(URL, json=body, headers=auth), 422, "validation_error")


def _set_from_domains(db: Database, *args: str) -> None:
    env = {"CONVEYOR_DATABASE_URL": db.url.render_as_string(hide_password=False)}
    result = CliRunner().invoke(app, ["tenants", "set-from-domains", "acme", *args], env=env)
    assert result.exit_code == 0, result.stderr


def test_the_relay_takes_only_the_senders_the_operator_allows_the_tenant(
    db: Database, auth: dict[str, str]
) -> None:
    client = make_client(db, **OPERATOR, email_from_domains="shop.example")

    def sender(address: str) -> Any:
        return client.put(URL, json={"email": {"from": address}}, headers=auth)

    problem = assert_problem(sender("CEO <ceo@bank.example>"), 422, "sender_not_allowed")
    assert problem["errors"][0]["loc"] == ["body", "email", "from"]
    assert "shop.example" in problem["detail"]
    assert sender("Shop <hello@shop.example>").status_code == 200
    assert assert_problem(sender("x@mail.shop.example"), 422, "sender_not_allowed")
    # The operator gives this tenant its own list (the setting no longer applies to it).
    _set_from_domains(db, "*.shop.example,other.example")
    assert sender("x@mail.shop.example").status_code == 200
    assert sender("y@other.example").status_code == 200
    assert_problem(sender("Shop <hello@shop.example>"), 422, "sender_not_allowed")
    _set_from_domains(db, "--default")
    assert sender("Shop <hello@shop.example>").status_code == 200
    # On its own SMTP server a tenant sends from whatever it likes.
    own = {**SMTP, "from": "CEO <ceo@bank.example>"}
    assert client.put(URL, json={"email": own}, headers=auth).status_code == 200


def test_secrets_are_refused_without_a_secret_key(db: Database, auth: dict[str, str]) -> None:
    client = make_client(db, secret_key=None)
    for body in (
        {"email": {**SMTP, **CREDS}},
        {"push": {"provider": "webhook", "webhook_url": HOOK}},
    ):
        problem = assert_problem(
            client.put(URL, json=body, headers=auth), 422, "secret_key_missing"
        )
        assert "CONVEYOR_SECRET_KEY" in problem["detail"]
    assert count(db, channel_settings) == 0
    _put(client, auth, email=SMTP)  # nothing secret: stored


def test_changes_are_audited_by_field_never_by_value(
    client: TestClient, auth: dict[str, str]
) -> None:
    _put(client, auth, email={**SMTP, **CREDS}, push={"provider": "webhook", "webhook_url": HOOK})
    _put(client, auth, email={**SMTP, **CREDS}, push={"provider": "webhook"})  # password anew
    _put(client, auth, email={**SMTP, "smtp_username": "shop"}, push={"provider": "webhook"})
    entries = client.get("/api/v1/audit?action=channel_settings.changed", headers=auth).json()
    changes = [e["details"]["changed"] for e in reversed(entries["items"])]
    assert changes == [
        {
            "email": ["provider", "smtp_host", "smtp_password", "smtp_port", "smtp_username"],
            "push": ["provider", "webhook_url"],
        },
        {"email": ["smtp_password"], "push": []},
    ]  # the third changed nothing: no row
    assert "shop-pw-1234" not in str(entries)


def test_settings_are_per_tenant(
    client: TestClient, auth: dict[str, str], new_tenant: Any, new_key: Any
) -> None:
    client.put(URL, json={"push": {"provider": "webhook", "webhook_url": HOOK}}, headers=auth)
    other = {"Authorization": f"Bearer {new_key(new_tenant('other')['id'])}"}
    assert client.get(URL, headers=other).json()["push"]["provider"] is None
    assert client.get(URL, headers=auth).json()["push"]["provider"] == "webhook"
