"""The SMTP server is one unit: the operator's credentials only ever go to the operator's host.

An attacker's server (a real aiosmtpd offering AUTH and keeping whatever
credentials arrive) stands in for a tenant's host; the operator's relay is
another one that requires the operator's login.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.domain.senders import SenderNotAllowed
from conveyor.services.channels import InvalidChannelSettings
from conveyor.store import channel_settings as channel_store
from tests.channels.conftest import SendHarness, smtp_overrides
from tests.support.smtp_server import SmtpServer, running_smtp

OPERATOR = ("operator", "op-s3cret-password")
_CONTACTS = itertools.count()
MAIL = {"subject": "Receipt", "text": "Order {{ trigger.payload.n }}"}


@pytest.fixture
def relay(harness: SendHarness) -> Iterator[SmtpServer]:
    """The operator's relay, requiring the operator's login, configured as the default."""
    with running_smtp(auth=OPERATOR) as server:
        harness.use_settings(
            email_provider="smtp",
            email_from="Ops <ops@operator.example>",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_username=OPERATOR[0],
            smtp_password=OPERATOR[1],
            smtp_starttls=False,  # the operator's own relay is used as configured
        )
        yield server


@pytest.fixture
def attacker() -> Iterator[SmtpServer]:
    """A tenant's server that offers AUTH and keeps every credential it is given."""
    with running_smtp(record_auth=True) as server:
        yield server


@pytest.fixture
def mail(harness: SendHarness) -> str:
    """An automation sending one email to the run's contact."""
    harness.template("receipt", **MAIL)
    return harness.automation(
        {
            "name": "mail",
            "steps": [{"key": "send", "type": "send_email_template", "template": "receipt"}],
        }
    )


def _send(h: SendHarness, automation: str, n: int) -> dict[str, Any]:
    contact = h.contact(email=f"olivia+{next(_CONTACTS)}@example.com")
    run_id = h.trigger_for(automation, contact, {"n": n})
    h.work()
    return h.step(run_id, "send")


def test_a_tenants_own_host_never_gets_the_operators_credentials(
    harness: SendHarness, mail: str, relay: SmtpServer, attacker: SmtpServer
) -> None:
    # The operator's relay: the operator's login, and the mail goes through.
    assert _send(harness, mail, 0)["status"] == "completed"
    assert relay.inbox.logins == [OPERATOR[0]]
    # The tenant points host and port at its own server, without credentials of its own.
    for own in (
        {"smtp_host": "127.0.0.1", "smtp_port": attacker.port, "smtp_starttls": False},
        {"provider": "smtp", "smtp_host": "127.0.0.1", "smtp_port": attacker.port,
         "smtp_starttls": False},
    ):  # fmt: skip
        harness.channels(email=own)
        assert _send(harness, mail, 1)["status"] == "completed"
    assert len(attacker.inbox.received) == 2
    assert attacker.inbox.auth_attempts == []  # no AUTH arrived, with anyone's credentials
    assert relay.inbox.logins == [OPERATOR[0]]


@pytest.mark.parametrize(
    "email",
    [
        {"smtp_port": 2525},
        {"smtp_starttls": False},
        {"smtp_username": "me", "smtp_password": "mine"},
        {"smtp_host": "mail.example.com", "smtp_username": "me"},
    ],
    ids=["port-only", "tls-only", "credentials-only", "username-without-password"],
)
def test_part_of_the_smtp_unit_is_refused(harness: SendHarness, email: dict[str, Any]) -> None:
    with pytest.raises(InvalidChannelSettings) as info:
        harness.channels(email=email)
    assert info.value.extra["errors"][0]["loc"] == ["body", "email"]


def test_a_partial_unit_stored_by_an_older_version_sends_nowhere(
    harness: SendHarness, mail: str, relay: SmtpServer, attacker: SmtpServer
) -> None:
    # Older versions merged key by key: a row naming only a port meant the
    # operator's host and credentials on the tenant's port. Now it is a
    # tenant's server without a host: nothing is connected to.
    with harness.db.transaction() as conn:
        email = {"provider": "smtp", "smtp_port": attacker.port, "smtp_starttls": False}
        channel_store.put_overrides(
            conn, harness.tenant, email=email, push={}, now=harness.clock.now()
        )
    connections = relay.inbox.connections
    step = _send(harness, mail, 1)
    assert step["status"] == "failed"
    assert step["error"]["code"] == "channel_not_configured"
    assert relay.inbox.connections == connections
    assert attacker.inbox.connections == 0


def test_auth_in_clear_to_a_tenants_server_is_refused(
    harness: SendHarness, mail: str, attacker: SmtpServer
) -> None:
    creds = {"smtp_username": "shop", "smtp_password": "shop-s3cret"}
    with pytest.raises(InvalidChannelSettings) as info:
        harness.channels(email=smtp_overrides(attacker, **creds))
    assert info.value.extra["errors"][0]["type"] == "plaintext_auth"
    # Allowed by the operator, saved and used...
    harness.use_settings(smtp_allow_plaintext_auth=True)
    harness.channels(email=smtp_overrides(attacker, **creds))
    assert _send(harness, mail, 1)["status"] == "completed"
    assert attacker.inbox.auth_attempts == [("shop", "shop-s3cret")]
    # ...then no longer allowed: the send is refused before anything connects.
    harness.use_settings(smtp_allow_plaintext_auth=False)
    connections = attacker.inbox.connections
    step = _send(harness, mail, 2)
    assert step["status"] == "failed"
    assert step["error"]["code"] == "plaintext_auth_refused"
    assert step["attempt_count"] == 1
    assert attacker.inbox.connections == connections


def test_the_relay_sends_only_from_the_domains_allowed_to_the_tenant(
    harness: SendHarness, mail: str, relay: SmtpServer
) -> None:
    with pytest.raises(SenderNotAllowed):
        harness.channels(email={"from": "CEO <ceo@bank.example>"})
    harness.use_settings(email_from_domains="shop.example,*.shop.example")
    for sender in ("Shop <shop@shop.example>", "news@mail.shop.example"):
        harness.channels(email={"from": sender})
        assert _send(harness, mail, 1)["status"] == "completed"
    assert [m["From"] for m in relay.inbox.received[-2:]] == [
        "Shop <shop@shop.example>",
        "news@mail.shop.example",
    ]
    # The operator narrows the list: the next send says why it is refused, and sends nothing.
    harness.use_settings(email_from_domains="other.example")
    received = len(relay.inbox.received)
    step = _send(harness, mail, 2)
    assert step["status"] == "failed"
    assert step["error"]["code"] == "sender_not_allowed"
    assert "news@mail.shop.example" in step["error"]["message"]
    assert step["attempt_count"] == 1
    assert len(relay.inbox.received) == received
