"""Outbound connections under the egress policy: resolve once, check, connect pinned.

Every way out (``http_request``, push webhooks, SMTP, the check before an
Apprise call) comes through here. A host is resolved once; the addresses the
policy refuses are dropped (``conveyor.domain.egress``); if none is left the
call fails with ``Denied`` before any connection is attempted, with a text
that says nothing of the port; otherwise the connection goes to the first
address left, and only there (no second lookup that could answer otherwise).
TLS still names the original host (SNI, certificate check, ``Host``).

A ``policy`` of None means a trusted endpoint (what the operator configured):
it is resolved and connected the same way, without the check.
"""

from __future__ import annotations

import asyncio
import socket
import typing
from ipaddress import IPv6Address, ip_address

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

from conveyor.domain.egress import EgressPolicy, IPAddress, parse_ip_literal


class EgressError(Exception):
    """An outbound call stopped by one of our limits; ``code`` says which."""

    code: typing.ClassVar[str] = "egress_error"


class Denied(EgressError):
    """The host is (or resolves only to) addresses the egress policy refuses."""

    code = "egress_denied"

    def __init__(self, host: str) -> None:
        # The same words whatever the port, and no address: what a name resolves
        # to inside the operator's network is not the tenant's business.
        super().__init__(
            f"{host} is not an address this server connects to (egress policy; "
            "CONVEYOR_EGRESS_ALLOW can permit it)"
        )
        self.host = host


async def _lookup(host: str, port: int) -> list[IPAddress]:
    literal = parse_ip_literal(host)
    if literal is not None:  # every numeric form, read here, not by the resolver
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        found.setdefault(ip_address(sockaddr[0]), None)  # in the resolver's order
    return list(found)


async def resolve(policy: EgressPolicy | None, host: str, port: int) -> IPAddress:
    """The one address to connect to: the first the policy permits.

    Raises:
        Denied: no address is left (nothing was connected to).
        OSError: the name does not resolve.
    """
    addresses = await _lookup(host, port)
    if policy is not None:
        addresses = [ip for ip in addresses if policy.permits(host, ip)]
    if not addresses:
        raise Denied(host)
    first = addresses[0]
    if isinstance(first, IPv6Address) and first.ipv4_mapped is not None:
        return first.ipv4_mapped  # the IPv4 host it names, reachable without IPv6
    return first


async def check_all(policy: EgressPolicy, host: str) -> None:
    """Refuse a host if any address it resolves to is refused (for clients we cannot pin).

    A name that does not resolve passes: the client cannot reach it either
    (until the name changes: the residual window documented for Apprise).
    """
    try:
        addresses = await _lookup(host, 0)
    except OSError:
        return
    if not addresses or not all(policy.permits(host, ip) for ip in addresses):
        raise Denied(host)


async def open_socket(
    policy: EgressPolicy | None, host: str, port: int, timeout: float
) -> socket.socket:
    """A connected, non-blocking TCP socket to ``host:port`` under the policy (for SMTP).

    Raises:
        Denied: the policy refuses every address of ``host``.
        OSError: resolving or connecting failed (``TimeoutError`` after ``timeout``).
    """
    async with asyncio.timeout(timeout):
        ip = await resolve(policy, host, port)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (str(ip), port))
        except BaseException:
            sock.close()
            raise
    return sock


class PinnedBackend(AsyncNetworkBackend):
    """httpcore's network backend, connecting to the checked address of each host."""

    def __init__(self, policy: EgressPolicy | None) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        """Connect to the first permitted address of ``host`` (``Denied`` if none)."""
        try:
            ip = await asyncio.wait_for(resolve(self.policy, host, port), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # the name does not resolve
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        # The address as text: AnyIO reads a literal without a lookup.
        return await self._inner.connect_tcp(
            str(ip),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        """Never: outbound calls are TCP only."""
        raise httpcore.ConnectError("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retries use it)."""
        await asyncio.sleep(seconds)
