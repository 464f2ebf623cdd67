"""Automation definitions: the wire/YAML model and its validation.

Validation names the problem: unknown step type, duplicate key, dependency
cycle, unknown step or branch in ``depends_on``, bad expression. Step-type
settings are checked against the specs the caller passes in (the action
registry), so this module stays free of any action code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.domain import sandbox
from conveyor.domain.errors import (
    ExpressionError,
    ExpressionTimeout,
    ExpressionTooLarge,
    InvalidDefinition,
)
from conveyor.domain.expressions import check_expression, check_templates, is_template
from conveyor.domain.retry import NO_RETRY, RetryPolicy

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
STEP_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
BASE_STEP_FIELDS = frozenset(
    {"key", "type", "name", "depends_on", "retry", "timeout", "continue_on_error"}
)
# Settings with these names are bare expressions, not templates.
EXPRESSION_FIELDS = frozenset({"expression", "filter", "match", "audience"})
# A definition's expressions and templates add up to at most this many times
# the per-string limit (CONVEYOR_EXPRESSION_MAX_SOURCE): 256 KiB by default.
DEFINITION_SOURCE_FACTOR = 16


class Trigger(BaseModel):
    """What starts a run (besides `POST /automations/{id}/trigger`, which starts any automation)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["manual", "event", "schedule", "automation_failure"] = Field(
        "manual",
        description="manual: only the trigger endpoint (or the CLI); event: each ingested event "
        "named `event`; schedule: each time `cron` comes due; automation_failure: each run of "
        "one of `automations` that ends failed, exhausted or timed-out",
    )
    event: str | None = Field(
        None, description="the event name that starts a run (required with type event)"
    )
    filter: str | None = Field(
        None,
        description="event triggers: a bare expression over `event` (also as `trigger`), "
        "`identity` and `contact`; a run starts only when it is true",
    )
    cron: str | None = Field(
        None,
        description="a 5-field cron expression, a 6-field one starting with seconds (required "
        "with type schedule; an invalid one is refused, `bad_cron`)",
        examples=["0 9 * * 1-5"],
    )
    timezone: str = Field(
        "UTC",
        description="schedule triggers: the IANA time zone `cron` is read in (an unknown one is "
        "refused, `bad_timezone`); also the default time zone of dry runs",
    )
    audience: str | None = Field(
        None,
        description="schedule triggers: a bare expression over `contact` and `now`; each firing "
        "starts one run per contact for which it is true. Absent: one run without a contact",
    )
    automations: list[str] = Field(
        default_factory=list,
        description="the names of the automations whose failures start a run (required, not "
        "empty, with type automation_failure)",
    )

    @model_validator(mode="after")
    def _needs(self) -> Trigger:
        if self.type == "event" and not self.event:
            raise ValueError("an event trigger needs `event`")
        if self.type == "schedule" and not self.cron:
            raise ValueError("a schedule trigger needs `cron`")
        if self.type == "automation_failure" and not self.automations:
            raise ValueError("an automation_failure trigger needs `automations`")
        return self


class Concurrency(BaseModel):
    """Runs sharing a key are limited to ``limit`` at once; the rest stay pending."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        description="a bare expression over `trigger` and `identity`, evaluated when a run is "
        "triggered (the run's `concurrency_key`); a value of none means no limit",
        examples=["identity.value"],
    )
    limit: int = Field(
        1,
        ge=1,
        le=10_000,
        description="how many runs with the same key may run at once; the others wait, "
        "pending, oldest first",
    )


class StepDef(BaseModel):
    """One step. Fields beyond the common ones are the step type's settings."""

    model_config = ConfigDict(extra="allow")

    key: str = Field(
        pattern=STEP_KEY_PATTERN,
        description="unique in the automation: letters, digits and `_`, not starting with a "
        "digit, at most 64 characters; expressions name the step `steps.<key>`",
    )
    type: str = Field(
        min_length=1,
        description="the step type: `set`, `condition`, `filter`, `delay`, `http_request`, "
        "`wait_for_event`, `send_email_template`, `send_push_template`, `trigger_automation`, "
        "or a plugin's (`unknown_step_type` otherwise)",
    )
    name: str | None = Field(None, description="a display name")
    depends_on: list[str] | None = Field(
        None,
        description='`"step"` or `"step.branch"` entries, all required. Absent: the previous '
        "step in the list (none for the first); `[]`: a root step that starts at once",
    )
    retry: RetryPolicy | None = Field(
        None, description="the step's own retry policy, instead of the automation's"
    )
    timeout: timedelta | None = Field(
        None,
        description="ISO 8601 duration of one attempt (a number is read as seconds): an "
        "attempt that runs out of time fails. For `wait_for_event`, how long to wait (then "
        "branch `timed_out`); for `http_request`, also the call's deadline, up to "
        "`CONVEYOR_HTTP_MAX_TIMEOUT` (300 s by default)",
    )
    continue_on_error: bool = Field(
        False,
        description="true: if the step fails, the steps depending on it still run and the run "
        "ends `completed-with-errors`",
    )

    @property
    def settings(self) -> dict[str, Any]:
        """The type-specific settings (everything that is not a common field)."""
        return dict(self.model_extra or {})


class AutomationDefinition(BaseModel):
    """A whole automation: trigger, settings and the step graph.

    Expressions (the settings `expression`, `filter`, `match`, `audience` and the
    concurrency `key`) are bare Jinja2 expressions; every other string of a
    step's settings is a template. Each is at most `CONVEYOR_EXPRESSION_MAX_SOURCE`
    characters (16,384 by default), and all of a definition's together at most
    16 times that (`expression_too_large`).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="unique among the tenant's live automations: a slug (lowercase letters, "
        "digits, `-` and `_`, starting with a letter or digit), at most 100 characters, and "
        "not shaped like an id (`name_is_id`: URLs take an id or a name)",
        examples=["order-follow-up"],
    )
    description: str | None = Field(None, description="free text, for people")
    enabled: bool = Field(
        True,
        description="false: the automation cannot be triggered (409 `automation_disabled`) and "
        "its event, schedule and failure triggers do not fire",
    )
    tags: list[str] = Field(
        default_factory=list, description="free labels; runs can be listed by tag (`tag`)"
    )
    trigger: Trigger = Field(
        default_factory=Trigger, description='what starts a run; default `{"type": "manual"}`'
    )
    concurrency: Concurrency | None = Field(
        None, description="at most `limit` runs with the same `key` at once; absent: no limit"
    )
    timeout: timedelta | None = Field(
        None,
        description="ISO 8601 duration for the whole run (a number is read as seconds); when "
        "it passes, the run ends `timed-out`. Absent: no limit",
    )
    retry: RetryPolicy | None = Field(
        None, description="the retry policy of every step without its own; absent: one attempt"
    )
    steps: list[StepDef] = Field(
        min_length=1,
        max_length=500,
        description="the steps, 1 to 500; each depends on the one before it unless it says "
        "otherwise (`depends_on`)",
    )

    def step(self, key: str) -> StepDef:
        """Return the step with this key (KeyError if absent)."""
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)

    def retry_policy(self, step: StepDef) -> RetryPolicy:
        """The step's own policy, else the automation default, else one attempt."""
        return step.retry or self.retry or NO_RETRY


@dataclass(frozen=True)
class StepTypeSpec:
    """What validation needs to know of a step type."""

    settings_model: type[BaseModel]
    branches: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dependency:
    """One entry of ``depends_on``: a step, optionally a branch it must take."""

    step: str
    branch: str | None = None

    @classmethod
    def parse(cls, text: str) -> Dependency:
        """Parse ``"step"`` or ``"step.branch"``."""
        step, _, branch = text.partition(".")
        return cls(step=step, branch=branch or None)


@dataclass(frozen=True)
class Graph:
    """The step graph of a validated definition, in definition (and topological) order."""

    order: tuple[str, ...]
    deps: Mapping[str, tuple[Dependency, ...]]
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def downstream(self, key: str) -> set[str]:
        """Every step that depends, directly or not, on ``key`` (``key`` excluded)."""
        seen: set[str] = set()
        stack = [key]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen


def build_graph(defn: AutomationDefinition) -> Graph:
    """Resolve default dependencies (the previous step) into a graph."""
    deps: dict[str, tuple[Dependency, ...]] = {}
    children: dict[str, list[str]] = {}
    previous: str | None = None
    for step in defn.steps:
        entries: tuple[Dependency, ...]
        if step.depends_on is None:
            entries = (Dependency(previous),) if previous else ()
        else:
            entries = tuple(Dependency.parse(d) for d in step.depends_on)
        deps[step.key] = entries
        for d in entries:
            children.setdefault(d.step, []).append(step.key)
        previous = step.key
    return Graph(
        order=_topological(defn, deps),
        deps=deps,
        children={k: tuple(v) for k, v in children.items()},
    )


def _topological(
    defn: AutomationDefinition, deps: Mapping[str, tuple[Dependency, ...]]
) -> tuple[str, ...]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = [*path[path.index(key) :], key]
            raise _Problem(["steps"], f"dependency cycle: {' -> '.join(cycle)}")
        state[key] = 1
        for d in deps.get(key, ()):
            visit(d.step, [*path, key])
        state[key] = 2
        order.append(key)

    for step in defn.steps:
        visit(step.key, [])
    return tuple(order)


class _Problem(Exception):
    def __init__(self, loc: list[str | int], msg: str) -> None:
        self.loc = loc
        self.msg = msg


def _pydantic_errors(exc: ValidationError, prefix: list[str | int]) -> list[dict[str, Any]]:
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_holds_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_template(v) for v in value)
    return False


def _settings_errors(
    exc: ValidationError, settings: Mapping[str, Any], loc: list[str | int]
) -> list[dict[str, Any]]:
    """Settings errors that rendering cannot cure.

    A setting written as a template (``url: "{{ vars.url }}"``) only has its
    real type after rendering, where the engine checks it again; so errors on
    such a field, and whole-model errors when any field is a template, wait
    until then.
    """
    templated = {name for name, value in settings.items() if _holds_template(value)}
    kept = []
    for e in _pydantic_errors(exc, loc):
        field = e["loc"][len(loc)] if len(e["loc"]) > len(loc) else None
        if (field is None and templated) or field in templated:
            continue
        kept.append(e)
    return kept


def parse_definition(
    raw: Mapping[str, Any], step_types: Mapping[str, StepTypeSpec]
) -> AutomationDefinition:
    """Validate a raw definition; raise ``InvalidDefinition`` listing every problem found."""
    try:
        defn = AutomationDefinition.model_validate(raw)
    except ValidationError as exc:
        raise InvalidDefinition(_pydantic_errors(exc, [])) from exc
    errors: list[dict[str, Any]] = []

    def problem(loc: list[str | int], msg: str, kind: str) -> None:
        errors.append({"loc": loc, "msg": msg, "type": kind})

    _check_total_source(defn, problem)
    if errors:  # nothing more is compiled from a definition that large
        raise InvalidDefinition(errors)
    _check_trigger(defn, problem)
    keys: dict[str, int] = {}
    for i, step in enumerate(defn.steps):
        loc: list[str | int] = ["steps", i]
        if step.key in keys:
            problem([*loc, "key"], f"duplicate step key {step.key!r}", "duplicate_key")
        keys[step.key] = i
        spec = step_types.get(step.type)
        if spec is None:
            known = ", ".join(sorted(step_types))
            problem(
                [*loc, "type"],
                f"unknown step type {step.type!r} (known: {known})",
                "unknown_step_type",
            )
            continue
        try:
            spec.settings_model.model_validate(step.settings)
        except ValidationError as exc:
            errors.extend(_settings_errors(exc, step.settings, loc))
        _check_step_expressions(step, loc, problem)
    if not errors:
        _check_dependencies(defn, step_types, problem)
    if not errors:
        try:
            build_graph(defn)
        except _Problem as p:
            problem(p.loc, p.msg, "dependency_cycle")
    if errors:
        raise InvalidDefinition(errors)
    return defn


def _kind(exc: ExpressionError, default: str) -> str:
    """An error's ``type``: the bounded evaluator's own code for a breach, else ``default``."""
    return exc.code if isinstance(exc, ExpressionTimeout | ExpressionTooLarge) else default


def _check_trigger(defn: AutomationDefinition, problem: Any) -> None:
    for name in ("filter", "audience"):
        source = getattr(defn.trigger, name)
        if source:
            try:
                check_expression(source)
            except ExpressionError as exc:
                problem(["trigger", name], exc.detail, _kind(exc, "bad_expression"))
    if defn.concurrency:
        try:
            check_expression(defn.concurrency.key)
        except ExpressionError as exc:
            problem(["concurrency", "key"], exc.detail, _kind(exc, "bad_expression"))


def _check_step_expressions(step: StepDef, loc: list[str | int], problem: Any) -> None:
    for name, value in step.settings.items():
        if name in EXPRESSION_FIELDS and isinstance(value, str):
            try:
                check_expression(value)
            except ExpressionError as exc:
                problem([*loc, name], exc.detail, _kind(exc, "bad_expression"))
        else:
            for error in check_templates(value):
                problem([*loc, name], error.detail, _kind(error, "bad_template"))


def _sources(defn: AutomationDefinition) -> Iterator[tuple[list[str | int], str]]:
    """Every expression and template string of a definition, with where it is."""
    for name in ("filter", "audience"):
        source = getattr(defn.trigger, name)
        if source:
            yield ["trigger", name], source
    if defn.concurrency:
        yield ["concurrency", "key"], defn.concurrency.key

    def walk(loc: list[str | int], value: Any, bare: bool) -> Iterator[tuple[list[str | int], str]]:
        if isinstance(value, str):
            if bare or is_template(value):
                yield loc, value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk([*loc, k], v, False)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from walk([*loc, i], v, False)

    for i, step in enumerate(defn.steps):
        for name, value in step.settings.items():
            yield from walk(["steps", i, name], value, name in EXPRESSION_FIELDS)


def _check_total_source(defn: AutomationDefinition, problem: Any) -> None:
    """All of a definition's expressions and templates together stay under a cap."""
    cap = DEFINITION_SOURCE_FACTOR * sandbox.default_limits().max_source
    total = 0
    for loc, source in _sources(defn):
        total += len(source)
        if total > cap:
            problem(
                loc,
                f"the definition's expressions and templates add up to more than {cap:,} "
                "characters",
                ExpressionTooLarge.code,
            )
            return


def _check_dependencies(
    defn: AutomationDefinition, step_types: Mapping[str, StepTypeSpec], problem: Any
) -> None:
    types = {s.key: s.type for s in defn.steps}
    for i, step in enumerate(defn.steps):
        for j, text in enumerate(step.depends_on or []):
            dep = Dependency.parse(text)
            loc: list[str | int] = ["steps", i, "depends_on", j]
            if dep.step == step.key:
                problem(loc, f"step {step.key!r} depends on itself", "dependency_cycle")
            elif dep.step not in types:
                problem(loc, f"unknown step {dep.step!r} in depends_on", "unknown_dependency")
            elif dep.branch is not None:
                branches = step_types[types[dep.step]].branches
                if dep.branch not in branches:
                    allowed = ", ".join(sorted(branches)) or "none"
                    problem(
                        loc,
                        f"step {dep.step!r} has no branch {dep.branch!r} (its branches: {allowed})",
                        "unknown_branch",
                    )
