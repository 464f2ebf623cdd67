"""The egress policy's rules: which addresses and names are refused, allowed, denied."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from conveyor.domain.egress import EgressPolicy, Rules, is_public, parse_ip_literal
from conveyor.settings import Settings

STRICT = EgressPolicy()


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("fe80::1%25eth0", "fe80::1%eth0"),
    ],
)
def test_numeric_hosts_are_read_like_the_c_library(host: str, address: str) -> None:
    assert parse_ip_literal(host) == ip_address(address)


@pytest.mark.parametrize(
    "host", ["example.com", "localhost", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "08", "1e5"]
)
def test_names_are_not_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",
        "3fff::1",
        "fec0::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "2002:7f00:1::",
        "64:ff9b::a00:1",
    ],
)
def test_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ip_address(address))
    assert not STRICT.permits(None, ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert STRICT.permits("example.com", ip_address(address))


def test_allow_opens_a_network_and_deny_wins_over_it() -> None:
    policy = EgressPolicy.build("127.0.0.1/32,10.0.0.0/8", "10.9.0.0/16")
    assert policy.permits(None, ip_address("127.0.0.1"))
    assert policy.permits(None, ip_address("::ffff:127.0.0.1"))  # the same address, mapped
    assert not policy.permits(None, ip_address("127.0.0.2"))
    assert policy.permits(None, ip_address("10.1.2.3"))
    assert not policy.permits(None, ip_address("10.9.2.3"))


def test_deny_also_refuses_public_addresses_and_names() -> None:
    policy = EgressPolicy.build(None, "1.1.1.0/24,tracker.example,*.ads.example")
    assert not policy.permits(None, ip_address("1.1.1.1"))
    assert not policy.permits("tracker.example", ip_address("8.8.8.8"))
    assert not policy.permits("x.ads.example", ip_address("8.8.8.8"))
    assert not policy.permits("X.Ads.Example.", ip_address("8.8.8.8"))
    assert policy.permits("ads.example", ip_address("8.8.8.8"))  # *.domain: names under it


def test_an_allowed_name_may_resolve_to_a_private_address() -> None:
    policy = EgressPolicy.build("crm.internal,*.svc.cluster", "secret.svc.cluster")
    private = ip_address("10.0.0.5")
    assert policy.permits("crm.internal", private)
    assert policy.permits("api.svc.cluster", private)
    assert not policy.permits("secret.svc.cluster", private)  # deny wins
    assert not policy.permits("other.internal", private)
    assert not policy.permits("svc.cluster", private)


def test_an_empty_allow_replaces_the_default_and_bad_rules_are_refused() -> None:
    assert EgressPolicy.build("", None) == EgressPolicy()
    for bad in ("127.0.0.1:8080", "http://x", "a b", "*."):
        with pytest.raises(ValueError, match="neither a CIDR nor a host name"):
            Rules.parse(bad)
    with pytest.raises(ValueError, match="no port"):
        Settings(egress_allow="127.0.0.1:80")
    with pytest.raises(ValueError, match="not a URL scheme"):
        Settings(apprise_schemes="json://x")


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:8080/x", True),
        ("http://2130706433/", True),
        ("http://0x7f.1/", True),
        ("http://017700000001/", True),
        ("http://127.1/", True),
        ("http://[::ffff:127.0.0.1]/", True),
        ("http://169.254.169.254/latest/meta-data/", True),
        ("http://localhost:9000/", True),
        ("http://api.localhost/", True),
        ("https://crm.example/hooks", False),
        ("https://93.184.215.14/", False),
    ],
)
def test_a_saved_url_is_judged_without_a_lookup(url: str, refused: bool) -> None:
    assert (STRICT.url_refusal(url) is not None) is refused


def test_allowed_loopback_saves() -> None:
    allowed = EgressPolicy.build("127.0.0.1/32", None)
    assert allowed.url_refusal("http://127.0.0.1:8080/") is None
    assert allowed.url_refusal("http://localhost:8080/") is None
    assert EgressPolicy.build(None, "*.corp.example").url_refusal("https://a.corp.example/")
