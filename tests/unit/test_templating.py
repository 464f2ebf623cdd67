"""Message templates: strict, sandboxed, escaped where it matters, bounded in time and size."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from conveyor.domain.templating import (
    RenderLimits,
    TemplateRenderError,
    TemplateTimeout,
    TemplateTooLarge,
    check_content,
    render_content,
)

CONTEXT: dict[str, Any] = {
    "contact": {"email": "olivia@example.com", "attributes": {"first_name": "<b>Olivia</b>"}},
    "trigger": {"payload": {"order_id": "ord_1", "items": [1, 2, 3]}},
    "vars": {"shop": "A & B"},
}
# Tight limits keep the timing tests short; they hold whatever the machine's load.
FAST = RenderLimits(timeout=0.2, max_chars=10_000)


def _text(source: str, limits: RenderLimits | None = None) -> str:
    out = render_content("email", {"subject": "s", "text": source}, CONTEXT, limits)
    return str(out["text"])


def test_html_is_escaped_in_html_only() -> None:
    content = {
        "subject": "Hi {{ contact.attributes.first_name }}",
        "text": "Hi {{ contact.attributes.first_name }}, {{ vars.shop }}",
        "html": "<p>Hi {{ contact.attributes.first_name }}, {{ vars.shop }}</p>",
    }
    out = render_content("email", content, CONTEXT)
    assert out["subject"] == "Hi <b>Olivia</b>"
    assert out["text"] == "Hi <b>Olivia</b>, A & B"
    assert out["html"] == "<p>Hi &lt;b&gt;Olivia&lt;/b&gt;, A &amp; B</p>"


def test_a_subject_is_one_line() -> None:
    out = render_content("email", {"subject": "a\r\nBcc: x@y.z\n  b", "text": "t"}, CONTEXT)
    assert out["subject"] == "a Bcc: x@y.z b"


def test_push_parts_and_data_render_as_text() -> None:
    content = {
        "title": "Order {{ trigger.payload.order_id }}",
        "body": "{{ vars.shop }} <3",
        "data": {
            "url": "/o/{{ trigger.payload.order_id }}",
            "nested": [{"n": "{{ 1 + 1 }}"}],
            "k": 4,
        },
    }
    out = render_content("push", content, CONTEXT)
    assert out == {
        "title": "Order ord_1",
        "body": "A & B <3",
        "data": {"url": "/o/ord_1", "nested": [{"n": "2"}], "k": 4},
    }


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{{ nobody }}", "'nobody' is undefined"),
        ("{{ contact.attributes.nickname }}", "has no attribute 'nickname'"),
        ("{{ trigger.payload.missing.deeper }}", "has no attribute 'missing'"),
    ],
    ids=["variable", "attribute", "nested"],
)
def test_a_render_error_names_the_missing_variable_and_the_field(source: str, named: str) -> None:
    with pytest.raises(TemplateRenderError) as info:
        _text(source)
    assert named in info.value.detail
    assert info.value.detail.startswith("text: ")
    assert info.value.field == "text"
    assert info.value.code == "template_error"


@pytest.mark.parametrize(
    "source",
    ["{{ ().__class__.__bases__ }}", "{{ contact.__class__ }}", "{% set x = vars.update({}) %}"],
    ids=["dunder", "class", "mutation"],
)
def test_the_sandbox_refuses_unsafe_code(source: str) -> None:
    with pytest.raises(TemplateRenderError):
        _text(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% for i in range(10) %}{{ f(n + 1) if n < 12 else '' }}{% endfor %}"
        "{% endmacro %}{{ f(0) }}",
    ],
    ids=["nested-loops", "nested-loops-with-output", "deep-recursion-fan-out"],
)
def test_an_endless_template_stops_at_the_time_limit(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateTimeout) as info:
        _text(source, FAST)
    elapsed = time.monotonic() - started
    assert info.value.code == "template_timeout"
    assert info.value.field == "text"
    # Stopped by the deadline, not by running to the end (which would take hours).
    assert elapsed < 30
    assert sys.gettrace() is None  # the trace function is gone again


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}",
        "{{ 'x' * 100000000 }}",
        "{{ 'x' | center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '%999999999d' | format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "{% set ns = namespace(s=['x']) %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        "{{ 7 ** 100000000 }}",
        "{{ (range(100000) | list | string) * 1 }}",
    ],
    ids=[
        "long-output",
        "repeat",
        "center",
        "ljust",
        "percent-format",
        "brace-format",
        "doubling-concat",
        "doubling-list",
        "power",
        "big-filter-result",
    ],
)
def test_a_huge_template_stops_at_the_size_limit(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateTooLarge) as info:
        _text(source, FAST)
    assert info.value.code == "template_too_large"
    assert time.monotonic() - started < 30


def test_limits_leave_ordinary_templates_alone() -> None:
    source = "{% for i in trigger.payload['items'] %}{{ i }},{% endfor %} {{ 1234567 * 3 }}"
    assert _text(source, FAST) == "1,2,3, 3703701"
    assert _text("{{ '%d items' | format(1000000) }}", FAST) == "1000000 items"


def test_check_content_names_each_field_that_does_not_compile() -> None:
    problems = check_content(
        "push", {"title": "{{ x", "body": "ok {{ y }}", "data": {"a": {"b": "{% if %}"}}}
    )
    assert [p["loc"] for p in problems] == [["title"], ["data", "a", "b"]]
    assert all(p["type"] == "bad_template" for p in problems)
    assert check_content("email", {"subject": "s", "text": None, "html": "<p>{{ x }}</p>"}) == []
