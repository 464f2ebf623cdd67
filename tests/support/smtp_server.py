"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, a free port), keeping what it receives.

Options: ``auth`` (a username and password the server requires),
``record_auth`` (AUTH offered without TLS and never required; every attempt's
username and password is kept in ``inbox.auth_attempts``: an attacker's
server, waiting for credentials), ``tls_dir``
(STARTTLS with a self-signed certificate made there by ``openssl``, required
before AUTH or MAIL), ``delay_first`` (the first DATA is held that many
seconds before it is answered, so a test can kill a client mid-call).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Inbox:
    """The handler: every DATA received, parsed, in arrival order."""

    def __init__(self, delay_first: float = 0.0) -> None:
        self.delay_first = delay_first
        self.received: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.auth_attempts: list[tuple[str, str]] = []
        self.connections = 0  # every connection the server accepted
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            # Counted on arrival: the client has handed the message over by now,
            # whether or not it lives to read the answer.
            self.received.append(parsed)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            first = len(self.received) == 1
        if first and self.delay_first:
            await asyncio.sleep(self.delay_first)
        return "250 2.0.0 Ok: queued"

    def message_ids(self) -> list[str]:
        """The Message-ID header of each message received."""
        with self.lock:
            return [str(m["Message-ID"]) for m in self.received]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the ``openssl`` command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class _Controller(Controller):
    """aiosmtpd's controller, building the SMTP server with our TLS and auth options."""

    def __init__(self, handler: Inbox, port: int, smtp_kwargs: dict[str, Any]) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=port)
        self.smtp_kwargs = smtp_kwargs

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # AUTH without TLS is what a test of AUTH alone asks for.
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return _CountingSMTP(self.handler, hostname="test.smtp", **self.smtp_kwargs)


class _CountingSMTP(SMTP):
    """aiosmtpd's server, counting the connections it accepts in the inbox."""

    def connection_made(self, transport: Any) -> None:
        inbox = self.event_handler
        with inbox.lock:
            inbox.connections += 1
        super().connection_made(transport)


class SmtpServer:
    """A running server: ``port``, ``inbox`` and, with TLS, the certificate file to trust."""

    def __init__(self, controller: _Controller, inbox: Inbox, cert: Path | None) -> None:
        self.controller = controller
        self.inbox = inbox
        self.cert = cert

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        return int(self.controller.port)


@contextmanager
def running_smtp(
    *,
    auth: tuple[str, str] | None = None,
    tls_dir: Path | None = None,
    delay_first: float = 0.0,
    record_auth: bool = False,
) -> Iterator[SmtpServer]:
    """Start an SMTP server in a thread; stop it afterwards."""
    inbox = Inbox(delay_first=delay_first)
    kwargs: dict[str, Any] = {}
    cert = None
    if tls_dir is not None:
        cert, key = self_signed_cert(tls_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        kwargs.update(tls_context=context, require_starttls=True)
    if auth is not None:

        def check(server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode())
            if ok == auth:
                inbox.logins.append(auth[0])
                return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        kwargs.update(authenticator=check, auth_required=True, auth_require_tls=tls_dir is not None)
    if record_auth:

        def steal(server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            if isinstance(data, LoginPassword):
                with inbox.lock:
                    inbox.auth_attempts.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=True)

        kwargs.update(authenticator=steal, auth_required=False, auth_require_tls=False)
    controller = _Controller(inbox, free_port(), kwargs)
    controller.start()
    inbox.connections = 0  # start() checks the server with a connection of its own
    try:
        yield SmtpServer(controller, inbox, cert)
    finally:
        controller.stop()
