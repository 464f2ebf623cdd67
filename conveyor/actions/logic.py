"""The pure step types: ``set``, ``condition``, ``filter``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.domain.errors import ExpressionError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.expressions import evaluate_bool


class SetSettings(BaseModel):
    """Settings of `set`: its output is the rendered `vars`."""

    model_config = ConfigDict(extra="forbid")
    vars: dict[str, Any] = Field(
        description="values to set; strings are templates (one that is exactly `{{ expr }}` "
        "keeps the value's type). The rendered object is the step's output and is merged "
        "into `vars` for the steps after it"
    )


class ExpressionSettings(BaseModel):
    """Settings of `condition` (branch `true` or `false`) and `filter` (false halts)."""

    model_config = ConfigDict(extra="forbid")
    expression: str = Field(
        description="a bare Jinja2 expression over the run's scope (`trigger`, `identity`, "
        "`contact`, `steps`, `vars`, `run`, `now`), read as true or false",
        examples=["vars.total > 100"],
    )


class _Pure:
    """Pure actions do the same thing for real and in a simulation."""

    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = True

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Pure steps simulate by executing."""
        return self.run(ctx)

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Execute the step."""
        return self.run(ctx)

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Execute the step synchronously."""
        return self.run(ctx)

    def run(self, ctx: ActionContext) -> ActionResult:
        """The step's logic."""
        raise NotImplementedError


def _truth(ctx: ActionContext) -> bool:
    assert isinstance(ctx.settings, ExpressionSettings)
    try:
        return evaluate_bool(ctx.settings.expression, ctx.scope)
    except (ExpressionTimeout, ExpressionTooLarge):
        raise  # a breach of the attempt's budget keeps its own code
    except ExpressionError as exc:
        raise StepError(exc.detail, retryable=False, code="expression_error") from exc


class SetAction(_Pure):
    """Set variables: the rendered values become the output and are merged into ``vars``."""

    step_type: ClassVar[str] = "set"
    settings_model: ClassVar[type[BaseModel]] = SetSettings
    branches: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: ActionContext) -> ActionResult:
        assert isinstance(ctx.settings, SetSettings)
        return ActionResult(output=ctx.settings.vars)


class ConditionAction(_Pure):
    """Take branch ``true`` or ``false``."""

    step_type: ClassVar[str] = "condition"
    settings_model: ClassVar[type[BaseModel]] = ExpressionSettings
    branches: ClassVar[frozenset[str]] = frozenset({"true", "false"})

    def run(self, ctx: ActionContext) -> ActionResult:
        value = _truth(ctx)
        return ActionResult(output={"result": value}, branch="true" if value else "false")


class FilterAction(_Pure):
    """Continue when true; when false, halt: the rest is skipped and the run completes."""

    step_type: ClassVar[str] = "filter"
    settings_model: ClassVar[type[BaseModel]] = ExpressionSettings
    branches: ClassVar[frozenset[str]] = frozenset()

    def run(self, ctx: ActionContext) -> ActionResult:
        value = _truth(ctx)
        return ActionResult(output={"passed": value}, halt=not value)
