"""Email providers: ``smtp`` (aiosmtplib) and ``outbox`` (store only).

The SMTP connection is opened here, under the egress policy
(``conveyor.net.egress.open_socket``: resolved once, checked unless the host
and port are the operator's, pinned), and handed to aiosmtplib, which still
names the original host for STARTTLS.
"""

from __future__ import annotations

import email.utils
import socket
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from conveyor.channels.base import ChannelError, Delivery, OutgoingEmail
from conveyor.channels.config import EmailConfig
from conveyor.domain.egress import EgressPolicy
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


async def _smtp(
    config: EmailConfig, msg: EmailMessage, mail: OutgoingEmail, policy: EgressPolicy | None
) -> Delivery:
    assert config.smtp_host is not None
    where = f"{config.smtp_host}:{config.smtp_port}"
    try:
        sock = await open_socket(policy, config.smtp_host, config.smtp_port, SMTP_TIMEOUT)
    except Denied as exc:
        raise ChannelError(f"SMTP server: {exc}", code="egress_denied", retryable=False) from exc
    except OSError as exc:
        raise ChannelError(
            f"could not connect to the SMTP server at {where}: {type(exc).__name__}: {exc}",
            code="smtp_unavailable",
            retryable=True,
        ) from exc
    try:
        errors = await _send_on(sock, config, msg, mail)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(
            f"the SMTP server at {where} refused the recipient: {exc}",
            code="smtp_recipient_refused",
            retryable=False,
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        permanent = exc.code >= 500
        code = "smtp_auth_failed" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else None
        raise ChannelError(
            f"the SMTP server at {where} answered {exc.code} {exc.message}",
            code=code or ("smtp_rejected" if permanent else "smtp_deferred"),
            retryable=not permanent,
            details={"smtp_code": exc.code},
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Connection refused, TLS failure, timeout, server gone: worth another try.
        raise ChannelError(
            f"could not deliver through the SMTP server at {where}: {type(exc).__name__}: {exc}",
            code="smtp_unavailable",
            retryable=True,
        ) from exc
    if errors:
        refused = "; ".join(f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in errors.items())
        raise ChannelError(
            f"the SMTP server at {where} refused: {refused}",
            code="smtp_recipient_refused",
            retryable=False,
        )
    # SMTP gives no message id of its own; the Message-ID is how it is found again.
    return Delivery(provider_message_id=str(msg["Message-ID"]))
