"""Web origins (``scheme://host[:port]``), compared as browsers send them. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """The origin of an http(s) URL, or of an ``Origin`` header; None for anything else.

    Scheme and host are lower-cased and a default port is left out, so
    ``HTTPS://Example.com:443/path`` and ``https://example.com`` are the same
    origin. ``null``, other schemes, and URLs without a host or with a bad port
    have none.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower-cased, IPv6 without brackets
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
