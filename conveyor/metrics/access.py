"""Who may read the metrics: a bearer token when one is set, else loopback clients only."""

from __future__ import annotations

import hmac
import ipaddress


def is_loopback(host: str | None) -> bool:
    """Whether a client address is a loopback address (no address, a Unix socket: no)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(token: str | None, authorization: str | None, client: str | None) -> int | None:
    """None if a scrape may read the metrics, else the status to refuse it with.

    With ``token`` set: 401 unless ``authorization`` is ``Bearer <token>``
    (compared in constant time), whatever the address. Without: 403 unless
    the client is on a loopback address.
    """
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), token.encode())
        return None if ok and scheme.lower() == "bearer" else 401
    return None if is_loopback(client) else 403
