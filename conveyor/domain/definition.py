"""Automation definitions: the wire/YAML model and its validation.

Validation names every problem at once: the shape, unknown step types,
duplicate keys, settings, unknown steps or branches in ``depends_on``,
dependency cycles, bad expressions; a wrong shape in one part does not hide
the problems of the others. Step-type
settings are checked against the specs the caller passes in (the action
registry), so this module stays free of any action code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from conveyor.domain import sandbox
from conveyor.domain.errors import (
    ExpressionError,
    ExpressionTimeout,
    ExpressionTooLarge,
    InvalidDefinition,
)
from conveyor.domain.expressions import check_expression, check_templates, is_template
from conveyor.domain.retry import NO_RETRY, RetryPolicy
from conveyor.domain.times import Duration
from conveyor.domain.wire_types import Integer

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
STEP_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
BASE_STEP_FIELDS = frozenset(
    {"key", "type", "name", "depends_on", "retry", "timeout", "continue_on_error"}
)
# Settings with these names are bare expressions, not templates.
EXPRESSION_FIELDS = frozenset({"expression", "filter", "match", "audience"})
MAX_STEPS = 500
# Cycles named in one answer, at most (each names every step on it).
MAX_CYCLES = 10
# A definition's expressions and templates add up to at most this many times
# the per-string limit (CONVEYOR_EXPRESSION_MAX_SOURCE): 256 KiB by default.
DEFINITION_SOURCE_FACTOR = 16


_M = TypeVar("_M", bound=BaseModel)


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
            raise PydanticCustomError("incomplete_trigger", "an event trigger needs `event`")
        if self.type == "schedule" and not self.cron:
            raise PydanticCustomError("incomplete_trigger", "a schedule trigger needs `cron`")
        if self.type == "automation_failure" and not self.automations:
            raise PydanticCustomError(
                "incomplete_trigger", "an automation_failure trigger needs `automations`"
            )
        return self


class Concurrency(BaseModel):
    """Runs sharing a key are limited to ``limit`` at once; the rest stay pending."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        description="a bare expression over `trigger` and `identity`, evaluated when a run is "
        "triggered (the run's `concurrency_key`); a value of none means no limit",
        examples=["identity.value"],
    )
    limit: Integer = Field(
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
    timeout: Duration | None = Field(
        None,
        description="ISO 8601 duration of one attempt (a number is read as seconds): an "
        "attempt that runs out of time fails. For `wait_for_event`, how long to wait (then "
        "branch `timed_out`); for `http_request`, also the call's deadline, up to "
        "`CONVEYOR_HTTP_MAX_TIMEOUT` (300 s by default)",
    )
    continue_on_error: StrictBool = Field(
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
    enabled: StrictBool = Field(
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
    timeout: Duration | None = Field(
        None,
        description="ISO 8601 duration for the whole run (a number is read as seconds); when "
        "it passes, the run ends `timed-out`. Absent: no limit",
    )
    retry: RetryPolicy | None = Field(
        None, description="the retry policy of every step without its own; absent: one attempt"
    )
    steps: list[StepDef] = Field(
        min_length=1,
        max_length=MAX_STEPS,
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


def _default_deps(
    steps: Iterable[tuple[int, StepDef]], keys_at: Mapping[int, str]
) -> dict[str, tuple[Dependency, ...]]:
    """Each step's dependencies, a step without ``depends_on`` following the one before it.

    ``keys_at`` holds the key of every step by position (the step before may be
    one that ``steps`` leaves out); for a repeated key the first step counts.
    """
    deps: dict[str, tuple[Dependency, ...]] = {}
    for i, step in steps:
        if step.key in deps:
            continue
        if step.depends_on is None:
            previous = keys_at.get(i - 1)
            deps[step.key] = (Dependency(previous),) if previous is not None else ()
        else:
            deps[step.key] = tuple(Dependency.parse(d) for d in step.depends_on)
    return deps


def _walk(
    keys: Iterable[str], deps: Mapping[str, tuple[Dependency, ...]]
) -> tuple[tuple[str, ...], list[list[str]]]:
    """``keys`` in topological order (dependencies first), and the cycles met on the way.

    Only dependencies on keys of ``deps`` are followed. A cycle is listed once,
    from the step where the walk entered it back to that step; at most
    ``MAX_CYCLES`` are listed.
    """
    order: list[str] = []
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = path[path.index(key) :]
            turn = cycle.index(min(cycle))
            same = tuple(cycle[turn:] + cycle[:turn])  # one cycle, whichever step it is read from
            if same not in seen and len(cycles) < MAX_CYCLES:
                seen.add(same)
                cycles.append([*cycle, key])
            return
        state[key] = 1
        for d in deps.get(key, ()):
            if d.step in deps:
                visit(d.step, [*path, key])
        state[key] = 2
        order.append(key)

    for key in keys:
        visit(key, [])
    return tuple(order), cycles


def _cycle_problem(cycle: list[str]) -> dict[str, Any]:
    return {
        "loc": ["steps"],
        "msg": f"dependency cycle: {' -> '.join(cycle)}",
        "type": "dependency_cycle",
    }


def build_graph(defn: AutomationDefinition) -> Graph:
    """Resolve default dependencies (the previous step) into a graph.

    Raises:
        InvalidDefinition: the steps' dependencies form a cycle.
    """
    steps = list(enumerate(defn.steps))
    deps = _default_deps(steps, {i: s.key for i, s in steps})
    order, cycles = _walk((s.key for s in defn.steps), deps)
    if cycles:
        raise InvalidDefinition([_cycle_problem(c) for c in cycles])
    children: dict[str, list[str]] = {}
    for key, entries in deps.items():
        for d in entries:
            children.setdefault(d.step, []).append(key)
    return Graph(
        order=order,
        deps=deps,
        children={k: tuple(v) for k, v in children.items()},
    )


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


@dataclass(frozen=True)
class _Parts:
    """What the later phases of validation look at: the parts that are valid on their own.

    When the whole definition is valid these are all of it; when it is not,
    each part (trigger, concurrency, each step) that validates on its own, so
    that references, cycles and expressions are still checked there.
    """

    trigger: Trigger | None
    concurrency: Concurrency | None
    steps: tuple[tuple[int, StepDef], ...]  # with each step's position
    keys_at: Mapping[int, str]  # every step's key given as a string, valid step or not
    name: str | None

    @classmethod
    def of(cls, defn: AutomationDefinition) -> _Parts:
        steps = tuple(enumerate(defn.steps))
        keys = {i: s.key for i, s in steps}
        return cls(defn.trigger, defn.concurrency, steps, keys, defn.name)

    @classmethod
    def salvage(cls, raw: Any) -> _Parts:
        if not isinstance(raw, Mapping):
            return cls(None, None, (), {}, None)
        trigger = _part(Trigger, raw["trigger"]) if "trigger" in raw else Trigger()
        concurrency = _part(Concurrency, raw.get("concurrency"))
        steps: list[tuple[int, StepDef]] = []
        keys: dict[int, str] = {}
        listed = raw.get("steps")
        # Past the cap the list itself is the problem: its steps are not looked at.
        if isinstance(listed, list) and len(listed) <= MAX_STEPS:
            for i, item in enumerate(listed):
                if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                    keys[i] = item["key"]
                step = _part(StepDef, item)
                if step is not None:
                    steps.append((i, step))
        name = raw.get("name")
        named = isinstance(name, str) and re.match(NAME_PATTERN, name) is not None
        return cls(trigger, concurrency, tuple(steps), keys, name if named else None)


def _part(model: type[_M], value: Any) -> _M | None:
    """``value`` as ``model``, or None (its errors are the whole definition's already)."""
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


@dataclass(frozen=True)
class Checked:
    """A raw definition, checked: the model when valid, and every problem found.

    ``trigger``, ``name`` and ``steps`` are the parts that are valid on their
    own, for the caller's further checks (cron, egress) when the whole is not.
    """

    definition: AutomationDefinition | None
    errors: list[dict[str, Any]]
    trigger: Trigger | None
    name: str | None
    steps: tuple[tuple[int, StepDef], ...]


def check_definition(raw: Any, step_types: Mapping[str, StepTypeSpec]) -> Checked:
    """Check a raw definition in every phase; list every problem found, never stop at one.

    Phases: the shape (the pydantic model); the expressions and templates
    (unless together over the size cap, which is then the problem); each
    step's type and settings; the references in ``depends_on``; cycles. When
    the shape is wrong, the later phases run over the parts valid on their
    own, and cycles are looked for over the dependencies that resolve.
    """
    errors: list[dict[str, Any]] = []

    def problem(loc: list[str | int], msg: str, kind: str) -> None:
        errors.append({"loc": loc, "msg": msg, "type": kind})

    defn: AutomationDefinition | None
    try:
        defn = AutomationDefinition.model_validate(raw)
    except ValidationError as exc:
        defn = None
        errors.extend(_pydantic_errors(exc, []))
    parts = _Parts.of(defn) if defn is not None else _Parts.salvage(raw)
    # Nothing is compiled from a definition whose sources are that large.
    compiles = _check_total_source(parts, problem)
    if compiles:
        _check_trigger(parts, problem)
    keys: set[str] = set()
    for i, step in parts.steps:
        loc: list[str | int] = ["steps", i]
        if step.key in keys:
            problem([*loc, "key"], f"duplicate step key {step.key!r}", "duplicate_key")
        keys.add(step.key)
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
        if compiles:
            _check_step_expressions(step, loc, problem)
    _check_dependencies(parts, step_types, problem)
    # Over the dependencies that resolve, not counting a step's own (named above).
    deps = {
        key: tuple(d for d in entries if d.step != key)
        for key, entries in _default_deps(parts.steps, parts.keys_at).items()
    }
    errors.extend(_cycle_problem(c) for c in _walk(deps, deps)[1])
    return Checked(
        definition=defn if not errors else None,
        errors=errors,
        trigger=parts.trigger,
        name=parts.name,
        steps=parts.steps,
    )


def parse_definition(
    raw: Mapping[str, Any], step_types: Mapping[str, StepTypeSpec]
) -> AutomationDefinition:
    """Validate a raw definition; raise ``InvalidDefinition`` listing every problem found."""
    checked = check_definition(raw, step_types)
    if checked.definition is None:
        raise InvalidDefinition(checked.errors)
    return checked.definition


def _kind(exc: ExpressionError, default: str) -> str:
    """An error's ``type``: the bounded evaluator's own code for a breach, else ``default``."""
    return exc.code if isinstance(exc, ExpressionTimeout | ExpressionTooLarge) else default


def _check_trigger(parts: _Parts, problem: Any) -> None:
    trigger = parts.trigger
    for name in ("filter", "audience"):
        source = getattr(trigger, name) if trigger is not None else None
        if source:
            try:
                check_expression(source)
            except ExpressionError as exc:
                problem(["trigger", name], exc.detail, _kind(exc, "bad_expression"))
    if parts.concurrency:
        try:
            check_expression(parts.concurrency.key)
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


def _sources(parts: _Parts) -> Iterator[tuple[list[str | int], str]]:
    """Every expression and template string of a definition, with where it is."""
    for name in ("filter", "audience"):
        source = getattr(parts.trigger, name) if parts.trigger is not None else None
        if source:
            yield ["trigger", name], source
    if parts.concurrency:
        yield ["concurrency", "key"], parts.concurrency.key

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

    for i, step in parts.steps:
        for name, value in step.settings.items():
            yield from walk(["steps", i, name], value, name in EXPRESSION_FIELDS)


def _check_total_source(parts: _Parts, problem: Any) -> bool:
    """All of a definition's expressions and templates together stay under a cap.

    Returns False (after naming the problem) when they do not.
    """
    cap = DEFINITION_SOURCE_FACTOR * sandbox.default_limits().max_source
    total = 0
    for loc, source in _sources(parts):
        total += len(source)
        if total > cap:
            problem(
                loc,
                f"the definition's expressions and templates add up to more than {cap:,} "
                "characters",
                ExpressionTooLarge.code,
            )
            return False
    return True


def _check_dependencies(
    parts: _Parts, step_types: Mapping[str, StepTypeSpec], problem: Any
) -> None:
    """Each ``depends_on`` entry names another step, and a branch that step has."""
    known = set(parts.keys_at.values())
    types: dict[str, str] = {}
    for _, s in parts.steps:
        types.setdefault(s.key, s.type)
    for i, step in parts.steps:
        for j, text in enumerate(step.depends_on or []):
            dep = Dependency.parse(text)
            loc: list[str | int] = ["steps", i, "depends_on", j]
            if dep.step == step.key:
                problem(loc, f"step {step.key!r} depends on itself", "dependency_cycle")
            elif dep.step not in known:
                problem(loc, f"unknown step {dep.step!r} in depends_on", "unknown_dependency")
            elif dep.branch is not None and dep.step in types:
                spec = step_types.get(types[dep.step])
                if spec is None:  # an unknown type (named above): its branches are unknown too
                    continue
                if dep.branch not in spec.branches:
                    allowed = ", ".join(sorted(spec.branches)) or "none"
                    problem(
                        loc,
                        f"step {dep.step!r} has no branch {dep.branch!r} (its branches: {allowed})",
                        "unknown_branch",
                    )
