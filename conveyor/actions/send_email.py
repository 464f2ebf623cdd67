"""``send_email_template``: render an email template and deliver it to one recipient."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from conveyor.actions import sending
from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.channels.base import Delivery, OutgoingEmail
from conveyor.channels.email import send_email


class SendEmailSettings(BaseModel):
    """Settings of `send_email_template`: render an email template, send it once per lineage."""

    model_config = ConfigDict(extra="forbid")
    template: str = Field(
        min_length=1,
        max_length=100,
        description="the name of an email template; its version current when the step runs is "
        "used (`template_not_found`, `template_channel_mismatch` otherwise)",
    )
    to: str | None = Field(
        None,
        description="one email address, without a name; default the run's contact's email "
        "(`missing_recipient` without one)",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="extra values for the template, merged into `vars`; strings are templates",
    )

    @field_validator("to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if "@" not in value or any(c in value for c in "\r\n<>,;") or " " in value:
            raise PydanticCustomError(
                "invalid_setting", "`to` must be one email address, such as olivia@example.com"
            )
        return value


def _recipient(ctx: ActionContext, settings: SendEmailSettings) -> str:
    if settings.to:
        return settings.to
    contact = ctx.scope.get("contact") or {}
    email = contact.get("email") if isinstance(contact, dict) else None
    if not email:
        why = "the run has no contact" if not contact else "the run's contact has no email"
        raise StepError(
            f"no recipient: `to` is not set and {why}", retryable=False, code="missing_recipient"
        )
    return str(email)


def _stored(rendered: dict[str, Any], sender: str, to: str) -> dict[str, Any]:
    return {
        "from": sender,
        "to": to,
        "subject": rendered["subject"] or "",
        "text": rendered["text"],
        "html": rendered["html"],
    }


class SendEmailAction:
    """Send one templated email, once per run lineage (see ``conveyor.actions.sending``)."""

    step_type: ClassVar[str] = "send_email_template"
    settings_model: ClassVar[type[BaseModel]] = SendEmailSettings
    branches: ClassVar[frozenset[str]] = frozenset()
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = False

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Render the template's current version and deliver it (or reuse a delivery)."""
        s = ctx.settings
        assert isinstance(s, SendEmailSettings)
        to = _recipient(ctx, s)
        loaded = await sending.load(ctx, s.template, "email")
        context = sending.render_context(ctx, s.vars)
        rendered = await sending.render_off_loop(loaded.template, context)
        sender = loaded.channels.email.sender
        assert ctx.app is not None  # sending.load checked it
        config = sending.open_secrets(ctx, loaded.channels, "email").email
        policy = ctx.app.egress_policy()

        async def deliver(message_id: str, key: str) -> Delivery:
            mail = OutgoingEmail(
                to=to,
                sender=sender,
                subject=rendered["subject"] or "",
                text=rendered["text"],
                html=rendered["html"],
                idempotency_key=key,
            )
            return await send_email(config, mail, policy)

        outgoing = sending.Outgoing(
            recipient=to,
            subject=rendered["subject"],
            content=_stored(rendered, sender, to),
            deliver=deliver,
        )
        (result,) = await sending.deliver_all(ctx, loaded, "email", [outgoing])
        return ActionResult(
            output={
                "message_id": result["message_id"],
                "message_ids": [result["message_id"]],
                "to": to,
                "status": result["status"],
                "reused": result["reused"],
                "provider": config.provider,
                **loaded.template.describe(),
            }
        )

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Never called: sending is not inline."""
        raise NotImplementedError("send_email_template is not an inline action")

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Render the email that would be sent; send nothing and write nothing."""
        s = ctx.settings
        assert isinstance(s, SendEmailSettings)
        to = _recipient(ctx, s)
        template = sending.simulate_template(ctx, s.template, "email")
        rendered = sending.render(template, sending.render_context(ctx, s.vars))
        return ActionResult(
            output={
                "would_send": [{"channel": "email", "to": to, **rendered}],
                **template.describe(),
            }
        )
