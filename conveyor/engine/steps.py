"""Preparing a step attempt: the expression scope, rendered settings, the action."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from conveyor.actions.base import Action, ActionContext, StepError
from conveyor.actions.registry import get_action
from conveyor.channels import targets
from conveyor.domain.definition import EXPRESSION_FIELDS, AutomationDefinition, Graph, StepDef
from conveyor.domain.errors import ExpressionError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.expressions import render
from conveyor.domain.status import StepStatus


def contact_view(contact: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    """A contact as expressions see it."""
    if contact is None:
        return None
    return {
        "id": contact["id"],
        "email": contact["email"],
        "external_id": contact["external_id"],
        # Masked: a URL's credentials are for the sender alone (conveyor.channels.targets).
        "push_targets": targets.shown_all(contact["push_targets"]),
        "attributes": contact["attributes"],
    }


def build_scope(
    run: Mapping[str, Any],
    defn: AutomationDefinition,
    graph: Graph,
    steps: Mapping[str, Mapping[str, Any]],
    now: datetime,
    contact: Mapping[Any, Any] | None = None,
) -> dict[str, Any]:
    """The context expressions and templates see: trigger, identity, steps, vars, run, now."""
    step_view: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for key in graph.order:
        s = steps[key]
        if s["status"] in (StepStatus.COMPLETED, StepStatus.FAILED):
            step_view[key] = {
                "output": s["output"],
                "branch": s["branch_taken"],
                "status": s["status"],
                "error": s["error"],
            }
            if s["step_type"] == "set" and s["status"] == StepStatus.COMPLETED:
                variables.update(s["output"] or {})
    return {
        "trigger": run["trigger_event"],
        "identity": run["identity"],
        "contact": contact_view(contact),
        "steps": step_view,
        "vars": variables,
        "run": {
            "id": run["id"],
            "automation": run["automation_name"],
            "version": run["version_number"],
            "created_at": run["created_at"].isoformat(),
        },
        "now": now,
    }


@dataclass
class Prepared:
    """A step attempt ready to run."""

    key: str
    action: Action
    ctx: ActionContext
    attempt: int
    timeout: float | None

    def log_fields(self) -> dict[str, str | int]:
        """The fields of every line logged while this attempt runs."""
        run = self.ctx.run
        return {
            "tenant_id": str(run["tenant_id"]),
            "run_id": str(run["id"]),
            "step_key": self.key,
            "attempt": self.attempt,
        }


def prepare(
    step: StepDef,
    scope: dict[str, Any],
    now: datetime,
    *,
    attempt: int,
    resumed: bool = False,
    wake_at: datetime | None = None,
) -> Prepared:
    """Render the step's settings and build its context; raise ``StepError`` if they are bad."""
    action = get_action(step.type)
    raw = step.settings
    keep = EXPRESSION_FIELDS | action.raw_fields
    try:
        rendered = {k: (v if k in keep else render(v, scope)) for k, v in raw.items()}
    except (ExpressionTimeout, ExpressionTooLarge):
        raise  # a breach of the attempt's budget keeps its own code
    except ExpressionError as exc:
        raise StepError(exc.detail, retryable=False, code="template_error") from exc
    try:
        settings = action.settings_model.model_validate(rendered)
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StepError(
            f"invalid settings after rendering: {msg}", retryable=False, code="invalid_settings"
        ) from exc
    ctx = ActionContext(
        step=step,
        settings=settings,
        scope=scope,
        now=now,
        attempt=attempt,
        resumed=resumed,
        wake_at=wake_at,
    )
    timeout = step.timeout.total_seconds() if step.timeout else None
    return Prepared(step.key, action, ctx, attempt, timeout)
