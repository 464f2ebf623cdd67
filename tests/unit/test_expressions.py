"""Expressions and templates: one sandboxed Jinja2 language with strict undefined."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.domain.errors import ExpressionError
from conveyor.domain.expressions import (
    check_expression,
    check_template,
    check_templates,
    evaluate,
    evaluate_bool,
    is_template,
    render,
)

SCOPE: dict[str, Any] = {
    "trigger": {"name": "order.completed", "payload": {"total": 120, "order_id": "o-1"}},
    "identity": {"type": "email", "value": "ada@example.com"},
    "contact": {"email": "ada@example.com", "external_id": "c-9", "attributes": {"plan": "pro"}},
    "steps": {"check": {"output": {"result": True}, "branch": "true"}},
    "vars": {"count": 3, "tags": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("trigger.payload.total > 50", True),
        ("trigger.payload.total", 120),
        ("contact.attributes.plan == 'pro'", True),
        ("steps.check.branch", "true"),
        ("vars.tags | length", 2),
        ("vars.count * 2 + 1", 7),
        ("'b' in vars.tags", True),
        ("trigger.payload.missing is defined", False),
        ("trigger.payload.get('missing', 'dflt')", "dflt"),
    ],
)
def test_evaluate(source: str, expected: Any) -> None:
    assert evaluate(source, SCOPE) == expected


def test_evaluate_bool_coerces() -> None:
    assert evaluate_bool("vars.tags", SCOPE) is True
    assert evaluate_bool("vars.count - 3", SCOPE) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{ trigger.payload.total }}", 120),  # a single {{ }} keeps the native type
        ("  {{ trigger.payload.total }}  ", 120),  # surrounding whitespace does not matter
        ("{{ vars.tags }}", ["a", "b"]),
        ("{{ steps.check.output }}", {"result": True}),
        ("{{ trigger.payload.total > 100 }}", True),
        ("total: {{ trigger.payload.total }}", "total: 120"),  # anything more renders a string
        ("{{ vars.count }}{{ vars.count }}", "33"),
        ("{% for t in vars.tags %}{{ t }};{% endfor %}", "a;b;"),
        ("https://crm.example/hooks/{{ contact.external_id }}", "https://crm.example/hooks/c-9"),
        ("no markup at all", "no markup at all"),
        ("{ not a template }", "{ not a template }"),
    ],
)
def test_render_string(value: str, expected: Any) -> None:
    assert render(value, SCOPE) == expected


def test_render_walks_dicts_and_lists_and_leaves_other_values() -> None:
    value = {
        "order": "{{ trigger.payload.order_id }}",
        "total": "{{ trigger.payload.total }}",
        "lines": ["{{ vars.count }}", "x", 5, None, True],
        "nested": {"email": "{{ contact.email }}"},
        "n": 1.5,
    }
    assert render(value, SCOPE) == {
        "order": "o-1",
        "total": 120,
        "lines": [3, "x", 5, None, True],
        "nested": {"email": "ada@example.com"},
        "n": 1.5,
    }


def test_rendering_an_undefined_variable_names_it() -> None:
    with pytest.raises(ExpressionError, match="'nobody' is undefined") as info:
        render("hello {{ nobody }}", SCOPE)
    assert info.value.code == "expression_error"
    assert "hello {{ nobody }}" in info.value.detail


def test_rendering_a_missing_attribute_names_it() -> None:
    with pytest.raises(ExpressionError, match="no attribute 'missing'"):
        render("total={{ trigger.payload.missing }}", SCOPE)


def test_using_an_undefined_variable_in_an_expression_names_it() -> None:
    with pytest.raises(ExpressionError, match="'nobody' is undefined"):
        evaluate("nobody > 3", SCOPE)


def test_evaluating_a_bare_undefined_variable_raises() -> None:
    with pytest.raises(ExpressionError, match="'nobody' is undefined"):
        evaluate("nobody", SCOPE)


def test_rendering_a_single_undefined_expression_raises() -> None:
    with pytest.raises(ExpressionError, match="no attribute 'missing'"):
        render("{{ trigger.payload.missing }}", SCOPE)


def test_evaluate_bool_of_an_undefined_variable_raises_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="'nobody' is undefined"):
        evaluate_bool("nobody", SCOPE)


@pytest.mark.parametrize(
    "source",
    [
        "''.__class__.__mro__",
        "vars.tags.append(1)",
        "vars.update({'x': 1})",
        "trigger.payload.__class__.__subclasses__()",
    ],
)
def test_the_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(ExpressionError, match="SecurityError"):
        evaluate(source, SCOPE)


def test_the_sandbox_hides_dunder_attributes_in_templates() -> None:
    with pytest.raises(ExpressionError, match="SecurityError"):
        render("class: {{ ().__class__ }}", SCOPE)
    with pytest.raises(ExpressionError, match="SecurityError"):
        evaluate("().__class__.__name__", SCOPE)
    with pytest.raises(ExpressionError, match="SecurityError"):
        evaluate("().__class__", SCOPE)


def test_the_sandbox_keeps_context_immutable() -> None:
    scope = {"vars": {"tags": ["a"]}}
    with pytest.raises(ExpressionError):
        evaluate("vars.tags.append('b')", scope)
    assert scope == {"vars": {"tags": ["a"]}}


def test_runtime_errors_become_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        evaluate("1 / 0", SCOPE)


@pytest.mark.parametrize("source", ["total >", "x ===", "a b", "(", "{{ x }}"])
def test_check_expression_rejects(source: str) -> None:
    with pytest.raises(ExpressionError, match="bad expression"):
        check_expression(source)


@pytest.mark.parametrize("source", ["{{ x ", "{% if x %}", "{{ x }} {% endfor %}", "{{ 1 + }}"])
def test_check_template_rejects(source: str) -> None:
    with pytest.raises(ExpressionError):
        check_template(source)


def test_check_templates_collects_every_problem_in_nested_values() -> None:
    problems = check_templates({"a": "{{ ok }}", "b": ["{{ bad ", {"c": "{% if %}"}], "d": 3})
    assert len(problems) == 2
    assert {p.code for p in problems} == {"expression_error"}
    assert check_templates({"fine": ["{{ x }}", "plain", 1]}) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("{{ x }}", True), ("{% if x %}y{% endif %}", True), ("plain {x}", False), ("", False)],
)
def test_is_template(value: str, expected: bool) -> None:
    assert is_template(value) is expected


def test_globals_are_there_and_the_scope_wins_over_them() -> None:
    # Contexts are built from a once-made copy of the globals (domain/jinja_context).
    assert evaluate("range(3) | list", {}) == [0, 1, 2]
    assert render("{% for i in range(2) %}{{ i }}{% endfor %}", {}) == "01"
    assert evaluate("range", {"range": "mine"}) == "mine"
    assert render("a {{ range }}", {"range": "mine"}) == "a mine"
    # One render's values never leak into the next.
    assert render("{{ x | default('none') }} {{ 1 }}", {}) == "none 1"
    evaluate("x", {"x": 1})
    with pytest.raises(ExpressionError, match="'x' is undefined"):
        evaluate("x", {})
