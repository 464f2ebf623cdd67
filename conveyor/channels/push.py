"""Push providers: ``webhook`` (one JSON POST per notification), ``apprise`` and ``outbox``."""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import httpx

from conveyor.channels.base import ChannelError, Delivery, OutgoingPush
from conveyor.channels.config import PushConfig

# Answers a later attempt may get past; other 4xx answers are final.
_RETRYABLE_4XX = frozenset({408, 425, 429})
WEBHOOK_TIMEOUT = 30.0


async def send_push(
    config: PushConfig, push: OutgoingPush, http: httpx.AsyncClient | None = None
) -> Delivery:
    """Deliver one push notification with the tenant's provider.

    Raises:
        ChannelError: not delivered; ``retryable`` tells transient from permanent.
    """
    if config.provider == "outbox":
        return Delivery(provider_message_id=None)
    problem = config.problem()
    if problem is not None:
        raise ChannelError(problem, code="channel_not_configured", retryable=False)
    if config.provider == "webhook":
        assert config.webhook_url is not None
        if http is None:
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
                return await _webhook(client, config.webhook_url, push)
        return await _webhook(http, config.webhook_url, push)
    if config.provider == "apprise":
        return await _apprise(push)
    raise ChannelError(
        f"unknown push provider {config.provider!r}", code="channel_not_configured", retryable=False
    )


def webhook_payload(push: OutgoingPush) -> dict[str, Any]:
    """The JSON body of a webhook notification."""
    return {
        "id": push.message_id,
        "idempotency_key": push.idempotency_key,
        "to": push.to,
        "title": push.title,
        "body": push.body,
        "data": push.data,
        **push.meta,
    }


async def _webhook(http: httpx.AsyncClient, url: str, push: OutgoingPush) -> Delivery:
    try:
        response = await http.post(
            url,
            json=webhook_payload(push),
            headers={"Idempotency-Key": push.idempotency_key},
        )
    except httpx.HTTPError as exc:
        raise ChannelError(
            f"push webhook {url} failed: {type(exc).__name__}: {exc}",
            code="push_unavailable",
            retryable=True,
        ) from exc
    status = response.status_code
    if not 200 <= status < 300:
        raise ChannelError(
            f"push webhook {url} answered {status}",
            code="push_rejected",
            retryable=status >= 500 or status in _RETRYABLE_4XX,
            details={"status": status, "body": response.text[:2000]},
        )
    provider_id: str | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("id"), str | int):
        provider_id = str(body["id"])
    return Delivery(provider_message_id=provider_id)


@lru_cache(maxsize=1)
def _load_apprise() -> Any:
    """Import Apprise and load its plugins once.

    Some plugins import modules that are deprecated on this Python (``imghdr``);
    the warning says nothing about Conveyor, so it is silenced while they load.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        apprise.Apprise().add("json://localhost")  # loading happens on the first add
    return apprise


@lru_cache(maxsize=4096)
def shown_target(target: str) -> str:
    """A push target as runs, messages and dry runs record and show it.

    Apprise URLs carry credentials (bot tokens, passwords, webhook secrets), and
    whoever may read runs need not see them: such a target is shown as
    Apprise's own privacy form, without its query (``tgram://1...f/987654321/``),
    or as ``scheme://***`` when Apprise cannot read it. A device token (no
    ``://``) is shown as it is. The target itself is still what is delivered
    to and what the message's idempotency key is made from.
    """
    scheme, sep, _ = target.partition("://")
    if not sep:
        return target
    try:
        service = _load_apprise().Apprise.instantiate(target)
    except Exception:  # whatever Apprise makes of odd input, show nothing of it
        service = None
    if service is None:
        return f"{scheme}://***"
    return str(service.url(privacy=True)).split("?", 1)[0]


async def _apprise(push: OutgoingPush) -> Delivery:
    apprise = _load_apprise()
    notifier = apprise.Apprise()
    if not notifier.add(push.to):
        raise ChannelError(
            "the push target is not an Apprise URL this server understands",
            code="invalid_push_target",
            retryable=False,
        )
    for service in notifier:
        # The generic HTTP services (json://, xml://, form://) send custom
        # headers: carry the idempotency key the same way the webhook does.
        headers = getattr(service, "headers", None)
        if isinstance(headers, dict):
            headers["Idempotency-Key"] = push.idempotency_key
    logs: list[str] = []

    def collect(entry: Any, _service: Any) -> None:
        if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL"):
            logs.append(str(getattr(entry, "message", entry)))

    result = await notifier.async_notify(
        body=push.body, title=push.title or "", log_callback=collect
    )
    if not result:
        raise ChannelError(
            "Apprise could not deliver: " + ("; ".join(logs) or "no reason given"),
            code="push_failed",
            retryable=True,
        )
    return Delivery(provider_message_id=None)
