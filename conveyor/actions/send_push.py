"""``send_push_template``: render a push template and deliver it to each target."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from conveyor.actions import sending
from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.channels import targets
from conveyor.channels.base import Delivery, OutgoingPush
from conveyor.channels.push import send_push, shown_target
from conveyor.crypto import SecretKeyMissing, SecretUnreadable
from conveyor.store import contacts as contact_store

MAX_TARGETS = 100


class SendPushSettings(BaseModel):
    """Settings of `send_push_template`: render a push template, send it to each target."""

    model_config = ConfigDict(extra="forbid")
    template: str = Field(
        min_length=1,
        max_length=100,
        description="the name of a push template; its version current when the step runs is "
        "used (`template_not_found`, `template_channel_mismatch` otherwise)",
    )
    # One target or a list of them (the validator below makes a list of one).
    to: Annotated[
        list[str] | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        None,
        description="push targets (device tokens, or Apprise URLs): a string or a list of up to "
        "100, each 1 to 1,000 characters, trimmed, repeats dropped; default the contact's "
        "(`missing_recipient` without any)",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="extra values for the template, merged into `vars`; strings are templates",
    )

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        targets = list(dict.fromkeys(t.strip() for t in value))
        if any(not t or len(t) > 1000 for t in targets):
            raise PydanticCustomError(
                "invalid_setting", "each push target must be 1 to 1000 characters"
            )
        if len(targets) > MAX_TARGETS:
            raise PydanticCustomError(
                "invalid_setting", "at most {n} push targets", {"n": MAX_TARGETS}
            )
        return targets


def _targets(
    settings: SendPushSettings, contact: Any, own: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``(shown, target)`` pairs to deliver to: ``to``, else the contact's targets.

    ``own`` are the contact's targets as ``(shown, target)``: a ``to`` entry that
    is the masked form of one of them (``{{ contact.push_targets[0] }}``) means
    that target, since expressions only ever see masked forms.
    """
    if settings.to:
        real = dict(own)
        return [(shown_target(t), real.get(t, t)) for t in settings.to]
    if not own:
        why = "the run has no contact" if not contact else "the run's contact has no push targets"
        raise StepError(
            f"no recipient: `to` is not set and {why}", retryable=False, code="missing_recipient"
        )
    unique: dict[str, str] = {}  # one notification per target
    for shown, target in own:
        unique.setdefault(target, shown)
    return [(shown, target) for target, shown in unique.items()][:MAX_TARGETS]


def _contact_targets(ctx: ActionContext) -> list[tuple[str, str]]:
    """The run's contact's push targets, opened: read just before sending (never in scopes)."""
    contact_id = ctx.run.get("contact_id")
    if not contact_id or ctx.db is None or ctx.app is None:
        return []
    tenant_id = ctx.run["tenant_id"]
    with ctx.db.read() as conn:
        row = contact_store.get_contact(conn, tenant_id, str(contact_id))
    if row is None:
        return []
    try:
        return targets.open_all(ctx.app.vault(), tenant_id, row["push_targets"])
    except (SecretKeyMissing, SecretUnreadable) as exc:
        raise StepError(exc.detail, retryable=False, code=exc.code) from None


def _shown_targets(ctx: ActionContext) -> list[tuple[str, str]]:
    """The contact's targets as the scope shows them (dry runs deliver nothing)."""
    contact = ctx.scope.get("contact") or {}
    shown = contact.get("push_targets") if isinstance(contact, dict) else None
    return [(str(t), str(t)) for t in shown or ()]


def _output(results: list[dict[str, Any]], provider: str, describe: dict[str, Any]) -> Any:
    return {
        "message_ids": [r["message_id"] for r in results],
        "messages": results,
        "reused": all(r["reused"] for r in results),
        "provider": provider,
        **describe,
    }


class SendPushAction:
    """Send one templated push notification per target, once per run lineage."""

    step_type: ClassVar[str] = "send_push_template"
    settings_model: ClassVar[type[BaseModel]] = SendPushSettings
    branches: ClassVar[frozenset[str]] = frozenset()
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = False

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Render the template's current version and deliver it to every target."""
        s = ctx.settings
        assert isinstance(s, SendPushSettings)
        own = await asyncio.to_thread(_contact_targets, ctx)
        recipients = _targets(s, ctx.scope.get("contact"), own)
        loaded = await sending.load(ctx, s.template, "push")
        context = sending.render_context(ctx, s.vars)
        rendered = await sending.render_off_loop(loaded.template, context)
        config, run = sending.open_secrets(ctx, loaded.channels, "push").push, ctx.run
        meta = {
            "run_id": run["id"],
            "step_key": ctx.step.key,
            "contact_id": run.get("contact_id"),
            "template": loaded.template.name,
            "template_version": loaded.template.version,
        }

        def sender(target: str) -> Any:
            async def deliver(message_id: str, key: str) -> Delivery:
                push = OutgoingPush(
                    to=target,
                    title=rendered["title"],
                    body=rendered["body"] or "",
                    data=rendered["data"],
                    idempotency_key=key,
                    message_id=message_id,
                    meta=meta,
                )
                return await send_push(config, push, ctx.http)

            return deliver

        outgoing = [
            sending.Outgoing(
                recipient=target,
                subject=rendered["title"],
                content={"to": shown, **rendered},
                deliver=sender(target),
                shown=shown,
            )
            for shown, target in recipients
        ]
        results = await sending.deliver_all(ctx, loaded, "push", outgoing)
        return ActionResult(output=_output(results, config.provider, loaded.template.describe()))

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Never called: sending is not inline."""
        raise NotImplementedError("send_push_template is not an inline action")

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Render the notifications that would be sent; send nothing and write nothing."""
        s = ctx.settings
        assert isinstance(s, SendPushSettings)
        recipients = _targets(s, ctx.scope.get("contact"), _shown_targets(ctx))
        template = sending.simulate_template(ctx, s.template, "push")
        rendered = sending.render(template, sending.render_context(ctx, s.vars))
        return ActionResult(
            output={
                "would_send": [
                    {"channel": "push", "to": shown, **rendered} for shown, _ in recipients
                ],
                **template.describe(),
            }
        )
