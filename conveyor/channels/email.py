"""Email providers: ``smtp`` (aiosmtplib) and ``outbox`` (store only).

The SMTP connection is opened here, under the egress policy
(``conveyor.net.egress.open_socket``: resolved once, checked unless the server
is the operator's, pinned), and handed to aiosmtplib, which still names the
original host for STARTTLS. Error texts name a tenant's server by its
``host:port`` and the operator's as ``<operator smtp>``, and never repeat a
credential.
"""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from conveyor.channels.base import ChannelError, Delivery, OutgoingEmail
from conveyor.channels.config import EmailConfig
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.redact import OPERATOR_SMTP, Scrubber
from conveyor.net.egress import Denied, open_socket

# Seconds for each SMTP command; a step's own `timeout` can cut the whole call shorter.
SMTP_TIMEOUT = 30.0


def message_id_header(idempotency_key: str) -> str:
    """The ``Message-ID`` carrying an idempotency key (``<key>``)."""
    return f"<{idempotency_key}>"


def build_message(mail: OutgoingEmail) -> EmailMessage:
    """The MIME message: text and html as ``multipart/alternative`` when both are given."""
    msg = EmailMessage()
    msg["From"] = mail.sender
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg["Message-ID"] = message_id_header(mail.idempotency_key)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    if mail.text is not None:
        msg.set_content(mail.text)
        if mail.html is not None:
            msg.add_alternative(mail.html, subtype="html")
    else:
        msg.set_content(mail.html or "", subtype="html")
    return msg


async def send_email(config: EmailConfig, mail: OutgoingEmail, policy: EgressPolicy) -> Delivery:
    """Deliver one email with the tenant's provider; ``policy`` checks a tenant's SMTP server.

    Raises:
        ChannelError: not delivered; ``retryable`` tells a transient failure
            (connection, 4xx reply) from a permanent one (5xx reply, bad address).
    """
    if config.provider == "outbox":
        return Delivery(provider_message_id=None)
    if config.provider != "smtp":
        raise ChannelError(
            f"unknown email provider {config.provider!r}",
            code="channel_not_configured",
            retryable=False,
        )
    problem = config.problem()
    if problem is not None:
        raise ChannelError(problem, code="channel_not_configured", retryable=False)
    # Checked at save too; here again, since the operator's settings may have changed since.
    for why, code in (
        (config.sender_problem(), "sender_not_allowed"),
        (config.auth_problem(), "plaintext_auth_refused"),
    ):
        if why is not None:
            raise ChannelError(why, code=code, retryable=False)
    try:
        msg = build_message(mail)
    except (ValueError, TypeError) as exc:  # a header the email package refuses
        raise ChannelError(
            f"cannot build the email: {exc}", code="bad_email", retryable=False
        ) from exc
    return await _smtp(config, msg, mail, None if config.smtp_trusted else policy)


async def _send_on(
    sock: socket.socket, config: EmailConfig, msg: EmailMessage, mail: OutgoingEmail
) -> dict[str, Any]:
    """Send over a connected socket; aiosmtplib owns (and closes) it from here."""
    try:
        errors, _reply = await aiosmtplib.send(
            msg,
            sender=email.utils.parseaddr(mail.sender)[1] or mail.sender,
            recipients=[mail.to],
            hostname=config.smtp_host,  # what STARTTLS verifies; the socket is already connected
            sock=sock,
            username=config.smtp_username or None,
            password=config.smtp_password or None,
            start_tls=config.smtp_starttls,
            timeout=SMTP_TIMEOUT,
        )
    except BaseException:
        sock.close()  # in case it failed before taking the socket over (closing twice is harmless)
        raise
    return dict(errors)


def _scrubber(config: EmailConfig) -> Callable[[str], str]:
    """What a library's text must not repeat: the operator's host, and the password."""
    pairs = [(config.smtp_password or "", "***")]
    if config.smtp_trusted and config.smtp_host:
        pairs.insert(0, (config.smtp_host, OPERATOR_SMTP))
    return Scrubber.of(pairs)


def _why(exc: BaseException, config: EmailConfig) -> str:
    """A library's failure in words that name no address of the operator's server.

    Connection errors carry the address connected to (``Connect call failed
    ('10.0.0.5', 587)``): for the operator's server only the kind is told.
    """
    if config.smtp_trusted and isinstance(exc, OSError):
        return type(exc).__name__
    return _scrubber(config)(f"{type(exc).__name__}: {exc}")


async def _smtp(
    config: EmailConfig, msg: EmailMessage, mail: OutgoingEmail, policy: EgressPolicy | None
) -> Delivery:
    assert config.smtp_host is not None
    where, scrub = config.shown_server, _scrubber(config)  # scrub: the server's own words
    try:
        sock = await open_socket(policy, config.smtp_host, config.smtp_port, SMTP_TIMEOUT)
    except Denied as exc:
        raise ChannelError(f"SMTP server: {exc}", code="egress_denied", retryable=False) from exc
    except OSError as exc:
        raise ChannelError(
            f"could not connect to the SMTP server {where}: {_why(exc, config)}",
            code="smtp_unavailable",
            retryable=True,
        ) from exc
    try:
        errors = await _send_on(sock, config, msg, mail)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(
            f"the SMTP server {where} refused the recipient: {scrub(str(exc))}",
            code="smtp_recipient_refused",
            retryable=False,
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        permanent = exc.code >= 500
        code = "smtp_auth_failed" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else None
        raise ChannelError(
            f"the SMTP server {where} answered {exc.code} {scrub(exc.message)}",
            code=code or ("smtp_rejected" if permanent else "smtp_deferred"),
            retryable=not permanent,
            details={"smtp_code": exc.code},
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Connection refused, TLS failure, timeout, server gone: worth another try.
        raise ChannelError(
            f"could not deliver through the SMTP server {where}: {_why(exc, config)}",
            code="smtp_unavailable",
            retryable=True,
        ) from exc
    if errors:
        refused = "; ".join(f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in errors.items())
        raise ChannelError(
            f"the SMTP server {where} refused: {scrub(refused)}",
            code="smtp_recipient_refused",
            retryable=False,
        )
    # SMTP gives no message id of its own; the Message-ID is how it is found again.
    return Delivery(provider_message_id=str(msg["Message-ID"]))
