"""Expressions and templates: one language, Jinja2 in the bounded sandbox.

Bare expressions (``filter``, ``expression``, ``match``, ``audience``, the
concurrency ``key``) are compiled with ``compile_expression``; string settings
of steps are templates. A template that is exactly one ``{{ expr }}`` yields
the expression's native value, so ``json: {total: "{{ trigger.payload.total }}"}``
keeps a number a number.

Everything here runs in ``conveyor.domain.sandbox``: under the budget in force
(one step attempt's, say), or a fresh one with the process's default limits.
Breaches raise ``ExpressionTimeout`` and ``ExpressionTooLarge``, which are
``ExpressionError`` subclasses with codes of their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2 import Undefined, UndefinedError

from conveyor.domain import jsonsafe, sandbox
from conveyor.domain.errors import ExpressionError, ExpressionTimeout, ExpressionTooLarge
from conveyor.domain.jinja_context import new_context

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


def is_template(value: str) -> bool:
    """True when a string holds Jinja2 markup and must be rendered."""
    return "{{" in value or "{%" in value


def check_expression(source: str) -> None:
    """Raise ``ExpressionError`` if ``source`` does not compile as an expression.

    ``ExpressionTooLarge`` (a subclass) when it is over the source limit.
    """
    sandbox.compiled("expression", source)


def check_template(source: str) -> None:
    """Raise ``ExpressionError`` if ``source`` does not compile as a template."""
    sandbox.check_source(source, "the template")
    match = _SINGLE_EXPR.match(source)
    if match:
        sandbox.compiled("expression", match.group("expr"))
    else:
        sandbox.compiled("text", source)


def _explain(exc: Exception, source: str) -> ExpressionError:
    if isinstance(exc, ExpressionTimeout | ExpressionTooLarge):
        return exc  # the budget's own errors say what was breached
    quoted = source if len(source) <= 200 else source[:200] + "…"
    if isinstance(exc, UndefinedError):
        return ExpressionError(f"{exc.message} (in {quoted!r})")
    return ExpressionError(f"{type(exc).__name__}: {exc} (in {quoted!r})")


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare expression against ``context`` and return its value.

    Runs under the budget in force (``conveyor.domain.sandbox``), or a fresh
    one with the default limits; the value returned is within them.
    """
    template, base = sandbox.compiled("expression", source)
    budget, token = sandbox.enter()
    try:
        ctx = new_context(template, base, context)
        for _ in template.root_render_func(ctx):
            pass
        value = ctx.vars["result"]
        if isinstance(value, Undefined):
            # compile_expression hands back the Undefined instead of raising.
            value._fail_with_undefined_error()
        if type(value) is str:
            # Text columns (concurrency keys, subjects) take no lone surrogate:
            # one would fail every commit of the round. JSON is cleaned by the store.
            value = jsonsafe.clean_text(value)
        return budget.built(value, "the value of the expression")
    except Exception as exc:  # any error inside user code is an expression error
        raise _explain(exc, source) from exc
    finally:
        sandbox.leave(token)


def evaluate_bool(source: str, context: Mapping[str, Any]) -> bool:
    """Evaluate an expression and coerce the value to a boolean."""
    return bool(evaluate(source, context))


def _render_text(source: str, context: Mapping[str, Any]) -> str:
    template, base = sandbox.compiled("text", source)
    budget, token = sandbox.enter()
    try:
        parts: list[str] = []
        total = 0
        for chunk in template.root_render_func(new_context(template, base, context)):
            total += len(chunk)
            budget.expect(total, "the rendered text")
            parts.append(chunk)
        return jsonsafe.clean_text(str(budget.built("".join(parts), "the rendered text")))
    except Exception as exc:
        raise _explain(exc, source) from exc
    finally:
        sandbox.leave(token)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively).

    The whole result is measured once more at the end: many settings that
    each name the same large value must not add up to more than the limit.
    A value with no template in it is returned as it is (it is bounded by
    the source limits already).
    """
    if not _holds_template(value):
        return value
    budget, token = sandbox.enter()
    try:
        out = _render(value, context)
        budget.built(out, "the rendered settings")
        return out
    finally:
        sandbox.leave(token)


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_holds_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_template(v) for v in value)
    return False


def _render(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if not is_template(value):
            return value
        sandbox.check_source(value, "the template")
        match = _SINGLE_EXPR.match(value)
        if match:
            return evaluate(match.group("expr"), context)
        return _render_text(value, context)
    if isinstance(value, dict):
        return {k: _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    return value


def check_templates(value: Any) -> list[ExpressionError]:
    """Compile every template string inside ``value``; return the errors found.

    Each error's ``code`` says what is wrong: ``expression_too_large`` for a
    source over the limit, ``expression_error`` for one that does not compile.
    """
    problems: list[ExpressionError] = []
    if isinstance(value, str):
        if is_template(value):
            try:
                check_template(value)
            except ExpressionError as exc:
                problems.append(exc)
    elif isinstance(value, dict):
        for v in value.values():
            problems.extend(check_templates(v))
    elif isinstance(value, list):
        for v in value:
            problems.extend(check_templates(v))
    return problems
