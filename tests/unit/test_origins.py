"""Web origins as browsers send them, and the settings that name them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor.domain.origins import origin_of
from conveyor.settings import Settings


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://conveyor.example.com", "https://conveyor.example.com"),
        ("HTTPS://Conveyor.Example.com:443/a/path?q=1", "https://conveyor.example.com"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://[::1]:8000/x", "http://[::1]:8000"),
        ("http://user:pw@example.com/", "http://example.com"),
        ("null", None),
        ("", None),
        ("ftp://example.com", None),
        ("https://", None),
        ("http://example.com:99999", None),
        ("conveyor.example.com", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_public_url_and_trusted_proxies_are_checked_at_start() -> None:
    base = {"database_url": "sqlite://"}
    assert Settings(**base).public_url is None
    assert Settings(**base, public_url="").public_url is None
    with pytest.raises(ValidationError, match="public_url"):
        Settings(**base, public_url="conveyor.example.com")
    assert [str(n) for n in Settings(**base).proxy_networks()] == ["127.0.0.1/32", "::1/128"]
    assert Settings(**base, trusted_proxies="").proxy_networks() == ()
    proxies = Settings(**base, trusted_proxies="10.0.0.0/8, 192.0.2.1").proxy_networks()
    assert [str(n) for n in proxies] == ["10.0.0.0/8", "192.0.2.1/32"]
    with pytest.raises(ValidationError, match="not an IP address or CIDR"):
        Settings(**base, trusted_proxies="proxy.internal")
