"""Which senders a tenant may use on the relay, and what texts may say about a URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor.domain.redact import OPERATOR_WEBHOOK, Scrubber, shown_url
from conveyor.domain.senders import SenderDomains, sender_address
from conveyor.settings import Settings

ALLOWED = SenderDomains.parse("shop.example, *.news.example")


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("Shop <hello@shop.example>", True),
        ("hello@SHOP.example", True),
        ("a@mail.news.example", True),
        ("a@news.example", False),  # `*.` is for the names under it only
        ("a@evilshop.example", False),
        ("a@shop.example.evil.example", False),
        ("a@bank.example, b@shop.example", False),  # two senders
        ('"b@shop.example" <a@bank.example>', False),  # the name is not the address
        ("a@good.example <b@shop.example>", False),  # parsers disagree
        ("group: a@shop.example;", False),
        ("not an address", False),
    ],
)
def test_sender_domains(sender: str, allowed: bool) -> None:
    assert ALLOWED.allows(sender) is allowed


def test_sender_address_names_exactly_one() -> None:
    assert sender_address("Shop <hello@shop.example>") == "hello@shop.example"
    assert sender_address("a@x.example, b@y.example") is None


@pytest.mark.parametrize("bad", ["shop example", "a@shop.example", "-x.example", "*.", "x..y"])
def test_a_bad_domain_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(email_from_domains=f"ok.example,{bad}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@hooks.example/a/b?token=x#frag", "https://hooks.example/a/b"),
        ("http://127.0.0.1:8080/x?y=1", "http://127.0.0.1:8080/x"),
        ("http://[::1]:81/", "http://[::1]:81/"),
        ("https://hooks.example", "https://hooks.example"),
        ("not a url", "<unreadable URL>"),
        ("http://host:99999/", "<unreadable URL>"),
    ],
)
def test_urls_are_shown_without_userinfo_or_query(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_a_scrubber_removes_every_part_of_a_url_that_holds_a_secret() -> None:
    url = "https://bot:pa%24%24word@hooks.example/p?token=abcdef123456&debug=true"
    scrub = Scrubber.for_url(url)
    text = (
        f"failed: {url}; auth bot:pa$$word@; query token=abcdef123456&debug=true;"
        " token abcdef123456; debug true"
    )
    out = scrub(text)
    for secret in ("pa$$word", "pa%24%24word", "abcdef123456", "bot:"):
        assert secret not in out
    assert out.startswith("failed: https://hooks.example/p;")
    assert out.endswith("debug true")  # short values are left alone


def test_the_operators_url_is_not_named_at_all() -> None:
    url = "https://hooks.slack.example/services/T0/B0/XYZ"
    scrub = Scrubber.for_url(url, operator=True)
    assert scrub(f"POST {url} failed") == f"POST {OPERATOR_WEBHOOK} failed"
    out = scrub("connect to hooks.slack.example:443 failed, path /services/T0/B0/XYZ")
    assert "slack" not in out
    assert "XYZ" not in out
