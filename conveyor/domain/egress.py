"""The egress policy: which addresses outbound connections may reach. Pure: no I/O.

Everything a tenant or a payload provides (an ``http_request`` URL, a tenant's
webhook URL or SMTP host, a contact's Apprise target) is checked against it;
what the operator configures (``CONVEYOR_SMTP_HOST``,
``CONVEYOR_PUSH_WEBHOOK_URL``) is trusted. An address is refused when a deny
rule matches it or its host name; otherwise it is permitted when an allow rule
matches, or when it is public. Not public: loopback, private, link-local,
CGNAT (100.64/10), multicast, unspecified, reserved and documentation ranges,
in IPv4 and IPv6, and IPv6 forms that carry an IPv4 address inside
(IPv4-mapped, IPv4-compatible, 6to4, NAT64).

The connecting side (``conveyor.net.egress``) resolves a name once, drops the
refused addresses and connects to the first one left. This module also
judges a URL when it is saved: a literal address (in any numeric form the C
library accepts: ``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``) and
a denied host name are refused then, without any lookup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final
from urllib.parse import urlsplit

from conveyor.domain.names import NamePatterns, pattern_name

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# What ``conveyor dev`` allows when CONVEYOR_EGRESS_ALLOW is not set.
DEV_ALLOW: Final = "127.0.0.0/8,::1/128"

# Ranges that are not public but that ``ipaddress`` (3.11) counts as global.
_NOT_PUBLIC: Final[tuple[IPNetwork, ...]] = (
    IPv4Network("100.64.0.0/10"),  # CGNAT, shared address space
    IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
    IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    IPv6Network("5f00::/16"),  # SRv6 SIDs
    IPv6Network("fec0::/10"),  # site-local (deprecated)
)
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_NAT64: Final[tuple[IPv6Network, ...]] = (
    IPv6Network("64:ff9b::/96"),
    IPv6Network("64:ff9b:1::/48"),
)


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for or tunnels to, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPATIBLE or any(ip in net for net in _NAT64):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether an address is on the public internet (what the default policy permits)."""
    if isinstance(ip, IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and not is_public(inner):
            return False
        if ip.scope_id:  # a zone only makes sense on a link
            return False
    if any(ip in net for net in _NOT_PUBLIC if net.version == ip.version):
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


def _number(part: str) -> int | None:
    """One part of a numeric IPv4 host, read like ``inet_aton``: 0x hex, leading-0 octal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part[0] == "0":
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def _inet_aton(host: str) -> IPv4Address | None:
    """An IPv4 address in every form the C library accepts, or None."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or any(not p or not p.isalnum() for p in parts):
        return None
    numbers = [_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return IPv4Address(value)


def normalize_host(host: str) -> str:
    """A host as rules compare it: lower case, without brackets or a final dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally (any numeric form, an IPv6 zone), or None."""
    h = normalize_host(host).replace("%25", "%")
    if ":" in h:
        try:
            return IPv6Address(h)
        except ValueError:
            return None
    return _inet_aton(h)


@dataclass(frozen=True)
class Rules:
    """Comma-separated CIDRs and host names (exact, or ``*.domain`` for names under it)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: NamePatterns = field(default_factory=NamePatterns)

    @classmethod
    def parse(cls, text: str | None) -> Rules:
        """Read a rule list; ``ValueError`` names an entry that is not a rule."""
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for raw in (text or "").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _is_host_name(pattern_name(entry)):
                raise ValueError(
                    f"{raw.strip()!r} is neither a CIDR nor a host name "
                    "(write `10.0.0.0/8`, `hooks.example.com` or `*.example.com`, no port)"
                )
            hosts.append(entry)
        return cls(tuple(networks), NamePatterns.of(hosts))

    def matches_name(self, host: str | None) -> bool:
        """Whether a host name is named by a rule."""
        return self.hosts.matches(host)

    def matches_address(self, ip: IPAddress) -> bool:
        """Whether an address (or the IPv4 address it maps) is in a rule's network."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


def _is_host_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return bool(name) and all(
        0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) for label in labels
    )


@dataclass(frozen=True)
class EgressPolicy:
    """Allow and deny rules (deny wins), and the Apprise schemes tenants may use."""

    allow: Rules = field(default_factory=Rules)
    deny: Rules = field(default_factory=Rules)
    apprise_schemes: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, allow: str | None, deny: str | None, apprise_schemes: str | None = None
    ) -> EgressPolicy:
        """The policy of these settings; ``ValueError`` names a bad entry."""
        schemes = frozenset(
            s.strip().lower().removesuffix("://") for s in (apprise_schemes or "").split(",")
        )
        return cls(Rules.parse(allow), Rules.parse(deny), schemes - {""})

    def permits(self, host: str | None, ip: IPAddress) -> bool:
        """Whether ``ip`` (which ``host`` resolved to; None for a literal) may be reached."""
        name = normalize_host(host) if host else None
        if self.deny.matches_name(name) or self.deny.matches_address(ip):
            return False
        if isinstance(ip, IPv6Address):
            inner = _embedded_ipv4(ip)
            if inner is not None and self.deny.matches_address(inner):
                return False
        if self.allow.matches_name(name) or self.allow.matches_address(ip):
            return True
        return is_public(ip)

    def refusal(self, host: str) -> str | None:
        """Why a host is refused without a lookup (a literal address, a denied name), or None.

        Names are judged again, on what they resolve to, when connecting.
        ``localhost`` and names under ``.localhost`` are loopback by definition
        (RFC 6761), so they are judged as 127.0.0.1.
        """
        literal = parse_ip_literal(host)
        if literal is not None:
            if self.permits(None, literal):
                return None
            return f"{host} is an address this server does not connect to (egress policy)"
        name = normalize_host(host)
        if self.deny.matches_name(name):
            return f"{host} is a host this server does not connect to (CONVEYOR_EGRESS_DENY)"
        if (name == "localhost" or name.endswith(".localhost")) and not self.permits(
            name, IPv4Address("127.0.0.1")
        ):
            return f"{host} is a loopback name this server does not connect to (egress policy)"
        return None

    def url_refusal(self, url: str) -> str | None:
        """``refusal`` for the host of a URL (None when it has none)."""
        try:
            host = urlsplit(url.strip()).hostname
        except ValueError:
            return None
        return self.refusal(host) if host else None
