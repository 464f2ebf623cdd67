"""Expressions and templates: one language, Jinja2 in an immutable sandbox.

Bare expressions (``filter``, ``expression``, ``match``, ``audience``, the
concurrency ``key``) are compiled with ``compile_expression``; string settings
of steps are templates. A template that is exactly one ``{{ expr }}`` yields
the expression's native value, so ``json: {total: "{{ trigger.payload.total }}"}``
keeps a number a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, Undefined, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conveyor.domain.errors import ExpressionError
from conveyor.domain.jinja_context import globals_of, new_context
from conveyor.domain.jinja_context import render as render_template

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


def is_template(value: str) -> bool:
    """True when a string holds Jinja2 markup and must be rendered."""
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> tuple[Template, dict[str, Any]]:
    try:
        expression = _env.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise ExpressionError(f"bad expression {source!r}: {exc}") from exc
    # The template that assigns `result` (TemplateExpression keeps it private):
    # rendered here with the context built once-per-template (jinja_context).
    template: Template = expression._template
    return template, globals_of(template)


@lru_cache(maxsize=4096)
def _compiled_template(source: str) -> tuple[Template, dict[str, Any]]:
    try:
        template = _env.from_string(source)
    except TemplateError as exc:
        raise ExpressionError(f"bad template {source!r}: {exc}") from exc
    return template, globals_of(template)


def check_expression(source: str) -> None:
    """Raise ``ExpressionError`` if ``source`` does not compile as an expression."""
    _compiled_expression(source)


def check_template(source: str) -> None:
    """Raise ``ExpressionError`` if ``source`` does not compile as a template."""
    match = _SINGLE_EXPR.match(source)
    if match:
        _compiled_expression(match.group("expr"))
    else:
        _compiled_template(source)


def _explain(exc: Exception, source: str) -> ExpressionError:
    if isinstance(exc, UndefinedError):
        return ExpressionError(f"{exc.message} (in {source!r})")
    return ExpressionError(f"{type(exc).__name__}: {exc} (in {source!r})")


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare expression against ``context`` and return its value."""
    template, base = _compiled_expression(source)
    try:
        ctx = new_context(template, base, context)
        for _ in template.root_render_func(ctx):
            pass
        value = ctx.vars["result"]
        if isinstance(value, Undefined):
            # compile_expression hands back the Undefined instead of raising.
            value._fail_with_undefined_error()
        return value
    except Exception as exc:  # any error inside user code is an expression error
        raise _explain(exc, source) from exc


def evaluate_bool(source: str, context: Mapping[str, Any]) -> bool:
    """Evaluate an expression and coerce the value to a boolean."""
    return bool(evaluate(source, context))


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        match = _SINGLE_EXPR.match(value)
        if match:
            return evaluate(match.group("expr"), context)
        template, base = _compiled_template(value)
        try:
            return render_template(template, base, context)
        except Exception as exc:
            raise _explain(exc, value) from exc
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def check_templates(value: Any) -> list[str]:
    """Compile every template string inside ``value``; return the error messages."""
    problems: list[str] = []
    if isinstance(value, str):
        if is_template(value):
            try:
                check_template(value)
            except ExpressionError as exc:
                problems.append(exc.detail)
    elif isinstance(value, dict):
        for v in value.values():
            problems.extend(check_templates(v))
    elif isinstance(value, list):
        for v in value:
            problems.extend(check_templates(v))
    return problems
