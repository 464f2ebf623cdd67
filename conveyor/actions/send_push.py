"""``send_push_template``: render a push template and deliver it to each target."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.actions import sending
from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.channels.base import Delivery, OutgoingPush
from conveyor.channels.push import send_push, shown_target

MAX_TARGETS = 100


class SendPushSettings(BaseModel):
    """Settings of ``send_push_template``."""

    model_config = ConfigDict(extra="forbid")
    template: str = Field(min_length=1, max_length=100, description="the template's name")
    to: list[str] | None = Field(
        None,
        description="push targets (device tokens, or Apprise URLs); default the contact's",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="extra values for the template, merged into `vars`"
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
            raise ValueError("each push target must be 1 to 1000 characters")
        if len(targets) > MAX_TARGETS:
            raise ValueError(f"at most {MAX_TARGETS} push targets")
        return targets


def _targets(ctx: ActionContext, settings: SendPushSettings) -> list[str]:
    if settings.to:
        return settings.to
    contact = ctx.scope.get("contact") or {}
    targets = contact.get("push_targets") if isinstance(contact, dict) else None
    if not targets:
        why = "the run has no contact" if not contact else "the run's contact has no push targets"
        raise StepError(
            f"no recipient: `to` is not set and {why}", retryable=False, code="missing_recipient"
        )
    return list(dict.fromkeys(str(t) for t in targets))[:MAX_TARGETS]


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
        targets = _targets(ctx, s)
        loaded = await sending.load(ctx, s.template, "push")
        context = sending.render_context(ctx, s.vars)
        rendered = await sending.render_off_loop(loaded.template, context)
        config, run = loaded.channels.push, ctx.run
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
            for target, shown in ((t, shown_target(t)) for t in targets)
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
        targets = _targets(ctx, s)
        template = sending.simulate_template(ctx, s.template, "push")
        rendered = sending.render(template, sending.render_context(ctx, s.vars))
        return ActionResult(
            output={
                "would_send": [
                    {"channel": "push", "to": shown_target(t), **rendered} for t in targets
                ],
                **template.describe(),
            }
        )
