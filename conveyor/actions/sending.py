"""What the two send steps share: template lookup, rendering, and idempotent delivery.

**Idempotency.** Each (run lineage, step, channel, recipient) has a stable key.
For each recipient the message row is written ``sending`` with that key in its
own committed transaction *before* the provider is called, and settled
``sent`` or ``failed`` in another one after. Before sending, a key that is
already ``sent`` is reused (nothing is sent; the output says ``reused``). A key
left ``sending`` means a worker died during the provider call (or the
attempt was interrupted): the outcome is unknown, so the message is sent
again: at least once, with a duplicate window that is exactly the provider
call. The key travels with the message (SMTP ``Message-ID``, HTTP
``Idempotency-Key``) so a provider that honours it drops the repeat.

The lineage is ``run.root_run_id`` (the first run of a retry chain) or the
run itself, so retries and replays compute the same keys; a retry made with
``resend: true`` uses its own run id instead, and sends everything again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from conveyor import metrics
from conveyor.actions.base import ActionContext, StepError
from conveyor.channels import config as channel_config
from conveyor.channels.base import ChannelError, Delivery
from conveyor.channels.config import ChannelConfig
from conveyor.crypto import SecretKeyMissing, SecretUnreadable
from conveyor.domain.ids import new_id
from conveyor.domain.templating import RenderLimits, TemplateRenderError, render_content
from conveyor.settings import Settings
from conveyor.store import messages as message_store
from conveyor.store import templates as template_store
from conveyor.store.db import Database


def idempotency_key(lineage_id: str, step_key: str, channel: str, recipient: str) -> str:
    """The stable key of one message: ``<lineage run id>.<digest>@conveyor``.

    The digest covers the step, the channel and the recipient, so the key
    (which travels as a ``Message-ID``) carries no address, and stays short
    enough for a ``Message-ID:`` header line that is never folded. Email
    addresses are compared case-insensitively; push targets (tokens, URLs)
    exactly.
    """
    who = recipient.strip().lower() if channel == "email" else recipient
    digest = hashlib.sha256(f"{step_key}\n{channel}\n{who}".encode()).hexdigest()[:16]
    return f"{lineage_id}.{digest}@conveyor"


@dataclass(frozen=True)
class TemplateUse:
    """The template version a step renders, as it was when the step ran."""

    template_id: str
    name: str
    channel: str
    version_id: str
    version: int
    content: Mapping[str, Any]

    def describe(self) -> dict[str, Any]:
        """The template part of a step's output."""
        return {
            "template": self.name,
            "template_id": self.template_id,
            "template_version": self.version,
            "template_version_id": self.version_id,
        }


def find_template(conn: Connection, tenant_id: str, name: str, channel: str) -> TemplateUse:
    """The current version of a template; ``StepError`` if missing or of the other channel."""
    row = template_store.get_current(conn, tenant_id, name)
    if row is None:
        raise StepError(f"template {name!r} not found", retryable=False, code="template_not_found")
    if row["channel"] != channel:
        raise StepError(
            f"template {name!r} is a {row['channel']} template, not {channel}",
            retryable=False,
            code="template_channel_mismatch",
        )
    return TemplateUse(
        template_id=row["id"],
        name=row["name"],
        channel=row["channel"],
        version_id=row["current_version_id"],
        version=int(row["current_version"]),
        content=row["content"],
    )


def render_context(ctx: ActionContext, step_vars: Mapping[str, Any]) -> dict[str, Any]:
    """What a message template sees: the step's scope, with the step's ``vars`` merged in."""
    scope = dict(ctx.scope)
    scope["vars"] = {**(scope.get("vars") or {}), **step_vars}
    return scope


def render(
    template: TemplateUse, context: Mapping[str, Any], limits: RenderLimits | None = None
) -> dict[str, Any]:
    """Render a template version; ``StepError`` (not retryable) naming the field on failure."""
    try:
        return render_content(template.channel, template.content, context, limits)
    except TemplateRenderError as exc:
        raise StepError(
            f"template {template.name!r} (version {template.version}): {exc.detail}",
            retryable=False,
            code=exc.code,
            details={"template": template.name, "version": template.version, "field": exc.field},
        ) from exc


async def render_off_loop(template: TemplateUse, context: Mapping[str, Any]) -> dict[str, Any]:
    """``render`` in a worker thread, so a slow template does not stall other attempts.

    The render's own deadline (``RenderLimits.timeout``) is what ends a runaway
    template; the thread only keeps the event loop free meanwhile.
    """
    return await asyncio.to_thread(render, template, context)


@dataclass(frozen=True)
class Loaded:
    """What an attempt reads before sending: the template, the channels, the lineage."""

    template: TemplateUse
    channels: ChannelConfig
    lineage_id: str


def _load(db: Database, app: Settings, run: Mapping[str, Any], name: str, channel: str) -> Loaded:
    with db.read() as conn:
        template = find_template(conn, run["tenant_id"], name, channel)
        channels = channel_config.load(conn, run["tenant_id"], app)
        if run.get("resend"):
            lineage = str(run["id"])
        else:
            # root_run_id names the lineage; older rows may only have retry_of links.
            lineage = str(run.get("root_run_id") or message_store.lineage_root(conn, run["id"]))
    return Loaded(template, channels, lineage)


async def load(ctx: ActionContext, name: str, channel: str) -> Loaded:
    """Read the template, channel configuration and lineage (off the event loop)."""
    if ctx.db is None or ctx.app is None:
        raise StepError("no database configured for sends", retryable=False)
    return await asyncio.to_thread(_load, ctx.db, ctx.app, ctx.run, name, channel)


def open_secrets(ctx: ActionContext, channels: ChannelConfig, channel: str) -> ChannelConfig:
    """The channel's stored secrets opened, just before sending; nothing else opens them.

    Only a provider that leaves needs them: the outbox sends without.

    Raises:
        StepError: a secret does not open (``secret_key_missing``, ``secret_unreadable``;
            not retried: another attempt would fare no better).
    """
    assert ctx.app is not None
    vault, tenant_id = ctx.app.vault(), ctx.run["tenant_id"]
    try:
        if channel == "email" and channels.email.provider == "smtp":
            return replace(
                channels, email=channel_config.open_email(channels.email, vault, tenant_id)
            )
        if channel == "push" and channels.push.provider == "webhook":
            return replace(channels, push=channel_config.open_push(channels.push, vault, tenant_id))
    except (SecretKeyMissing, SecretUnreadable) as exc:
        raise StepError(exc.detail, retryable=False, code=exc.code) from None
    return channels


def simulate_template(ctx: ActionContext, name: str, channel: str) -> TemplateUse:
    """The template a dry run renders: read through the simulator's connection or database."""
    tenant_id = ctx.run["tenant_id"]
    # A dry run renders the same templates for thousands of contacts of one day:
    # it may pass a cache (the day reads one snapshot, so a version is stable).
    cache: dict[tuple[str, str], TemplateUse] | None = ctx.extra.get("template_cache")
    if cache is not None and (name, channel) in cache:
        return cache[(name, channel)]
    if ctx.conn is not None:
        found = find_template(ctx.conn, tenant_id, name, channel)
        if cache is not None:
            cache[(name, channel)] = found
        return found
    if ctx.db is not None:
        with ctx.db.read() as conn:
            return find_template(conn, tenant_id, name, channel)
    raise StepError("no database to read the template from", retryable=False)


@dataclass(frozen=True)
class Outgoing:
    """One message to deliver to one recipient."""

    recipient: str
    subject: str | None  # email subject or push title, shown in lists
    content: dict[str, Any]  # the rendered message as stored
    deliver: Callable[[str, str], Awaitable[Delivery]]  # (message id, key) -> delivery
    # The recipient as recorded and shown, when it must not be (a push target
    # holding credentials); the key is still made from ``recipient``.
    shown: str | None = None


class _StepClock:
    """The step's time (the worker's clock when it started) plus the real time since.

    Message times then line up with the run's (under a test's fake clock too)
    while still showing how long the provider took.
    """

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.t0)


def _claim(db: Database, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    with db.transaction() as conn:
        found, must_send = message_store.claim(conn, row)
        return dict(found), must_send


def _settle(
    db: Database, message_id: str, delivery: Delivery | None, error: Any, now: datetime
) -> None:
    with db.transaction() as conn:
        if delivery is not None:
            message_store.mark_sent(conn, message_id, delivery.provider_message_id, now)
        else:
            message_store.mark_failed(conn, message_id, error, now)


async def deliver_all(
    ctx: ActionContext, loaded: Loaded, channel: str, outgoing: Sequence[Outgoing]
) -> list[dict[str, Any]]:
    """Send each message at most once per lineage (see the module docstring).

    Returns one ``{message_id, to, status, reused}`` per recipient. Raises
    ``StepError`` after trying every recipient if any failed (retryable only
    if every failure is: a retry re-sends just the failed ones).
    """
    assert ctx.db is not None
    run, provider, clock = ctx.run, _provider(loaded.channels, channel), _StepClock(ctx.now)
    results: list[dict[str, Any]] = []
    failures: list[ChannelError] = []
    for out in outgoing:
        key = idempotency_key(loaded.lineage_id, ctx.step.key, channel, out.recipient)
        now = clock()
        row = {
            "id": new_id(),
            "tenant_id": run["tenant_id"],
            "run_id": run["id"],
            "step_key": ctx.step.key,
            "channel": channel,
            "contact_id": run.get("contact_id"),
            "template_id": loaded.template.template_id,
            "template_version_id": loaded.template.version_id,
            "idempotency_key": key,
            "status": message_store.SENDING,
            "provider": provider,
            "recipient": out.shown or out.recipient,
            "subject": out.subject,
            "content": out.content,
            "last_event": "sending",
            "created_at": now,
            "updated_at": now,
        }
        message, must_send = await asyncio.to_thread(_claim, ctx.db, row)
        to = out.shown or out.recipient
        result = {"message_id": message["id"], "to": to, "reused": not must_send}
        if not must_send:
            results.append({**result, "status": message_store.SENT})
            continue
        error = await _deliver_one(ctx.db, message["id"], key, out, clock)
        metrics.MESSAGES.labels(channel, "failed" if error else "sent").inc()
        results.append({**result, "status": "failed" if error else message_store.SENT})
        if error is not None:
            failures.append(error)
    if failures:
        first = failures[0]
        raise StepError(
            first.message
            if len(failures) == 1
            else f"{len(failures)} sends failed; first: {first.message}",
            retryable=all(f.retryable for f in failures),
            code=first.code,
            details={"messages": results},
        )
    return results


async def _deliver_one(
    db: Database, message_id: str, key: str, out: Outgoing, clock: _StepClock
) -> ChannelError | None:
    """Call the provider and record the outcome; return the failure, if any."""
    try:
        delivery = await out.deliver(message_id, key)
    except ChannelError as exc:
        await asyncio.to_thread(_settle, db, message_id, None, exc.to_json(), clock())
        return exc
    except asyncio.CancelledError:
        # Cancelled or timed out during the call: the provider may or may not
        # have it. Say so on the row; the next attempt sends again.
        interrupted = {
            "code": "send_interrupted",
            "message": "the attempt was interrupted during the provider call; "
            "the provider may have received the message",
        }
        settle = asyncio.to_thread(_settle, db, message_id, None, interrupted, clock())
        await asyncio.shield(settle)
        raise
    await asyncio.to_thread(_settle, db, message_id, delivery, None, clock())
    return None


def _provider(channels: ChannelConfig, channel: str) -> str:
    return channels.email.provider if channel == "email" else channels.push.provider
