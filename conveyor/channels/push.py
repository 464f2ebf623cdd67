"""Push providers: ``webhook`` (one JSON POST per notification), ``apprise`` and ``outbox``.

Both providers that leave go through the egress policy. The webhook is
fetched with the egress client (a tenant's URL checked, the operator's
trusted); error texts show a tenant's URL as ``scheme://host/path`` and the
operator's as ``<operator webhook>``. Apprise opens its own connections, so
a target is first held to the schemes in ``CONVEYOR_APPRISE_SCHEMES`` and
every address its host resolves to must be permitted; between that check
and Apprise's own lookup a name could answer otherwise (DNS rebinding):
docs/operating.md says so.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import httpx

from conveyor.channels.base import ChannelError, Delivery, OutgoingPush
from conveyor.channels.config import PushConfig
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.redact import OPERATOR_WEBHOOK, Scrubber, shown_url
from conveyor.net.egress import Denied, EgressError, check_all
from conveyor.net.http import EgressClient

# Answers a later attempt may get past; other 4xx answers are final.
_RETRYABLE_4XX = frozenset({408, 425, 429})


async def send_push(
    config: PushConfig, push: OutgoingPush, http: httpx.AsyncClient | None = None
) -> Delivery:
    """Deliver one push notification with the tenant's provider.

    ``http`` is the worker's ``EgressClient``; anything else (or None) cannot
    deliver, since only it checks where a call goes.

    Raises:
        ChannelError: not delivered; ``retryable`` tells transient from permanent.
    """
    if config.provider == "outbox":
        return Delivery(provider_message_id=None)
    problem = config.problem()
    if problem is not None:
        raise ChannelError(problem, code="channel_not_configured", retryable=False)
    if not isinstance(http, EgressClient):
        raise ChannelError(
            "no egress HTTP client configured", code="channel_not_configured", retryable=False
        )
    if config.provider == "webhook":
        assert config.webhook_url is not None
        return await _webhook(http, config.webhook_url, push, trusted=config.webhook_trusted)
    if config.provider == "apprise":
        return await _apprise(push, http.policy)
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


async def _webhook(http: EgressClient, url: str, push: OutgoingPush, *, trusted: bool) -> Delivery:
    # Texts name a tenant's URL as scheme://host/path and the operator's not at all;
    # the library's and the server's own words are scrubbed of the URL's parts.
    scrub = Scrubber.for_url(url, operator=trusted)
    shown = OPERATOR_WEBHOOK if trusted else shown_url(url)
    try:
        response = await http.fetch(
            "POST",
            url,
            json=webhook_payload(push),
            headers={"Idempotency-Key": push.idempotency_key},
            trusted=trusted,
        )
    except Denied as exc:
        raise ChannelError(f"push webhook: {exc}", code="egress_denied", retryable=False) from exc
    except EgressError as exc:  # over the cap, past the deadline, undecodable
        code = "response_too_large" if exc.code == "response_too_large" else "push_unavailable"
        raise ChannelError(
            f"push webhook {shown} failed: {scrub(str(exc))}",
            code=code,
            retryable=code == "push_unavailable",
        ) from exc
    except httpx.HTTPError as exc:
        # A connection error names the address it tried: of the operator's, only the kind.
        why = type(exc).__name__ if trusted else scrub(f"{type(exc).__name__}: {exc}")
        raise ChannelError(
            f"push webhook {shown} failed: {why}", code="push_unavailable", retryable=True
        ) from exc
    status = response.status_code
    if not 200 <= status < 300:
        raise ChannelError(
            f"push webhook {shown} answered {status}",
            code="push_rejected",
            retryable=status >= 500 or status in _RETRYABLE_4XX,
            details={"status": status, "body": scrub(response.text[:2000])},
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


def _check_apprise_scheme(policy: EgressPolicy, target: str) -> None:
    scheme, sep, _ = target.partition("://")
    if sep and scheme.strip().lower() not in policy.apprise_schemes:
        allowed = ", ".join(sorted(policy.apprise_schemes)) or "none"
        raise ChannelError(
            f"Apprise scheme {scheme!r} is not allowed on this server "
            f"(CONVEYOR_APPRISE_SCHEMES allows: {allowed})",
            code="apprise_scheme_not_allowed",
            retryable=False,
        )


def _service_hosts(service: Any) -> list[str]:
    """The hosts an Apprise service connects to that its URL chose.

    Services that take a ``host`` (json://, ntfy://, gotify://, mailto://...)
    connect there; the others (tgram://, discord://, slack://...) call their
    provider's fixed API host, and what sits in their URL's host part is a
    token, not a place.
    """
    hosts = []
    if "host" in (getattr(type(service), "template_tokens", None) or {}):
        hosts.append(getattr(service, "host", None))
    hosts.append(getattr(service, "smtp_host", None))  # mailto:// may name its server apart
    return [h for h in dict.fromkeys(hosts) if isinstance(h, str) and h]


def target_hosts(target: str) -> list[str]:
    """The hosts an Apprise push target would connect to (none for a device token)."""
    if "://" not in target:
        return []
    notifier = _load_apprise().Apprise()
    try:
        if not notifier.add(target):
            return []
    except Exception:  # whatever Apprise makes of odd input: no host to judge
        return []
    return [h for service in notifier for h in _service_hosts(service)]


async def _check_apprise_hosts(policy: EgressPolicy, target: str, services: list[Any]) -> None:
    """Every address of every host the services will call must be permitted."""
    for service in services:
        for host in _service_hosts(service):
            try:
                await check_all(policy, host)
            except Denied as exc:
                raise ChannelError(
                    f"Apprise target {shown_target(target)}: {exc}",
                    code="egress_denied",
                    retryable=False,
                ) from exc


async def _apprise(push: OutgoingPush, policy: EgressPolicy) -> Delivery:
    _check_apprise_scheme(policy, push.to)
    apprise = _load_apprise()
    notifier = apprise.Apprise()
    if not notifier.add(push.to):
        raise ChannelError(
            "the push target is not an Apprise URL this server understands",
            code="invalid_push_target",
            retryable=False,
        )
    await _check_apprise_hosts(policy, push.to, list(notifier))
    for service in notifier:
        # A redirect would lead where nothing was checked (a target may even
        # ask for them with ?redirect=yes): Apprise follows none of ours.
        if hasattr(service, "redirects"):
            service.redirects = False
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
        # Apprise's own words may repeat the target: never its credentials.
        scrub = Scrubber.for_url(push.to, shown=shown_target(push.to))
        raise ChannelError(
            "Apprise could not deliver: " + (scrub("; ".join(logs)) or "no reason given"),
            code="push_failed",
            retryable=True,
        )
    return Delivery(provider_message_id=None)
