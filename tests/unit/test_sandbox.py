"""The bounded evaluator: every bomb stops at its limit, ordinary code is left alone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.actions.registry import step_type_specs
from conveyor.domain import sandbox
from conveyor.domain.definition import parse_definition
from conveyor.domain.errors import (
    ExpressionError,
    ExpressionTimeout,
    ExpressionTooLarge,
    InvalidDefinition,
)
from conveyor.domain.expressions import evaluate, render

# Tight limits keep the time bombs short; a breach does not depend on the machine's load
# (the deadline is the evaluating thread's CPU time).
FAST = sandbox.Limits(timeout=0.3, max_value=100_000, max_alloc=800_000, max_source=16_384)
SCOPE: dict[str, Any] = {"trigger": {"payload": {"s": "ab c" * 100, "n": 5, "items": [1, 2]}}}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(field)


def _growth() -> Callable[[], float]:
    """From now on, how far above the present resident size the process's peak went (MB).

    The peak is reset first (Linux's `clear_refs`), so what earlier tests in the
    same pytest worker allocated does not count.
    """
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    start = _status_mb("VmRSS")
    return lambda: _status_mb("VmHWM") - start


# The same sizes with time to spare: a size bomb must be refused for its size. Its
# CPU time includes the process's garbage collections, which in a test process
# with a large heap (a pytest-xdist worker late in the suite) can pass 0.3 s alone.
SIZED = dataclasses.replace(FAST, timeout=20.0)


def _render(source: str, limits: sandbox.Limits = FAST) -> Any:
    with sandbox.using(sandbox.Budget(limits)):
        return render(source, SCOPE)


TIME_BOMBS = {
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "recursive-macro": "{% macro f(n) %}{% for i in range(10) %}{{ f(n + 1) if n < 12 else '' }}"
    "{% endfor %}{% endmacro %}{{ f(0) }}",
    "quadratic-select": "{{ range(40000)|select('in', range(40000)|list)|list|length }}",
    "loop-of-filters": "{% for i in range(100000) %}{% for j in range(1000) %}"
    "{% if trigger.payload.s|length > 1000 %}x{% endif %}{% endfor %}{% endfor %}",
}

SIZE_BOMBS = {
    "repeat": "{{ 'a' * 10**9 }}",
    "percent-width": "{{ '%0999999999d' % 1 }}",
    "format-width": "{{ '%0999999999d'|format(1) }}",
    "brace-width": "{{ '{:>999999999}'.format(1) }}",
    "wordwrap": "{{ (trigger.payload.s * 1600000)|wordwrap(1)|length > 0 }}",
    "wordwrap-result": "{{ (trigger.payload.s * 200)|wordwrap(1, wrapstring='-' * 1000) }}",
    "power": "{{ 7 ** 100000000 }}",
    "center": "{{ 'x'|center(1000000000) }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "to-bytes": "{{ (10).to_bytes(10**9, 'big') }}",
    "graph-literal": "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}"
    "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x|string|length }}",
    "graph-tojson": "{% set a = [trigger.payload.s] * 20 %}{% set b = [a, a, a, a] %}"
    "{% set c = [b, b, b, b] %}{% set d = [c, c, c, c] %}{{ d|tojson|length }}",
    "replace-method": "{% set s = 'x' * 50000 %}{{ s.replace('', s) }}",
    "replace-filter": "{% set s = 'x' * 50000 %}{{ s|replace('', s) }}",
    "concat": "{% set s = 'x' * 50000 %}{{ s ~ s ~ s }}",
    "expandtabs": "{% set s = '\t' * 50000 %}{{ s.expandtabs(50000) }}",
    "join-filter": "{% set s = 'x' * 50000 %}{{ [s, s, s]|join(',') }}",
    "join-method": "{% set s = 'x' * 50000 %}{{ ','.join(range(3)|map('string')|map('replace', "
    "'0', s)|map('replace', '1', s)|map('replace', '2', s)) }}",
    "str-format": "{% set s = 'x' * 40000 %}{{ '{0}{0}{0}'.format(s) }}",
    "percent-mapping": "{% set s = 'x' * 40000 %}{{ '%(a)s%(a)s%(a)s' % {'a': s} }}",
    "block-set": "{% set x %}{% for i in range(100000) %}xxxxxxxxxx{% endfor %}{% endset %}"
    "{{ x|length }}",
    "doubling-concat": "{% set ns = namespace(s='x') %}{% for i in range(60) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling-list": "{% set ns = namespace(s=['x']) %}{% for i in range(60) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "many-small-values": "{% set ns = namespace(a=[]) %}{% for i in range(100000) %}"
    "{% set ns.a = ns.a + [i] %}{% endfor %}",
    "indent": "{{ ('x\n' * 1000)|indent(1000) }}",
}


@pytest.mark.parametrize("source", TIME_BOMBS.values(), ids=TIME_BOMBS.keys())
def test_a_time_bomb_stops_at_its_deadline(source: str) -> None:
    with pytest.raises(ExpressionTimeout) as info:
        _render(source)
    assert info.value.code == "expression_timeout"


@pytest.mark.parametrize("source", SIZE_BOMBS.values(), ids=SIZE_BOMBS.keys())
def test_a_size_bomb_is_refused_before_it_grows(source: str) -> None:
    growth = _growth()
    before = time.thread_time()
    with pytest.raises(ExpressionTooLarge) as info:
        _render(source, SIZED)
    assert info.value.code == "expression_too_large"
    assert time.thread_time() - before < 30  # refused, not built and then measured
    assert growth() < 1024  # the process never held a gigabyte more


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ([[1]] * 1000)|sum(start=[]) }}", "adds numbers only"),
        ("{{ 'ab'.translate({97: 'x'}) }}", "not available"),
        ("{{ 'x'|urlize }}", "(?i)no filter named 'urlize'"),
        ("{{ {'a': 1}|pprint }}", "(?i)no filter named 'pprint'"),
        ("{{ lipsum(1000) }}", "'lipsum' is undefined"),
        ("{{ [1]|slice(100000)|list }}", "at most 10000 slices"),
    ],
)
def test_operations_whose_cost_is_not_linear_are_not_available(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        _render(source)


def test_ordinary_code_is_left_alone() -> None:
    assert _render("{{ trigger.payload.n * 2 }}") == 10
    assert _render("{{ trigger.payload['items']|join(', ') }}") == "1, 2"
    assert _render("{{ 'a b c d'|wordwrap(3) }}") == "a b\nc d"
    assert _render("{{ 'abcdefg'|wordwrap(3) }}") == "abc\ndef\ng"
    assert _render("{{ '%05d|%s' % (42, 'x') }}") == "00042|x"
    assert _render("{{ '{}-{}'.format(1, 2) }}") == "1-2"
    assert _render("{{ [1, 2, 3]|sum }}") == 6
    assert _render("{{ [[1, 2], [3]] }}") == [[1, 2], [3]]
    assert _render("{% for x in range(3) %}{{ x }}{% endfor %}") == "012"


def test_values_nested_too_deeply_are_refused() -> None:
    source = "{% set ns = namespace(x=1) %}{% for i in range(300) %}{% set ns.x = [ns.x] %}"
    source += "{% endfor %}{{ ns.x|length }}"
    with pytest.raises(ExpressionTooLarge, match="nested more than"):
        _render(source)


def test_one_budget_covers_every_evaluation_of_an_attempt() -> None:
    """Four settings that each take most of the time limit add up to a breach."""
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with sandbox.using(sandbox.Budget(FAST)) as budget, pytest.raises(ExpressionTimeout):
        render({"a": "{{ 1 }}", "b": slow}, SCOPE)
    assert budget.cpu.until is not None
    assert time.thread_time() >= budget.cpu.until


def test_compiling_evaluates_nothing() -> None:
    """Jinja folds constants when it compiles; here nothing runs until evaluation."""
    sandbox.clear_cache()
    growth = _growth()
    started = time.thread_time()
    for i in range(50):
        sandbox.compiled("text", f"{{{{ 'p' * 10**8 }}}}{i}")
        sandbox.compiled("expression", f"'q' * 10**8 + '{i}'")
    assert time.thread_time() - started < 10
    assert growth() < 50  # not 50 x 100 MB of folded constants
    assert sandbox.cache_bytes() < 2 * 1024 * 1024


def test_the_compile_cache_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = sandbox._CompileCache(max_bytes=200_000)
    monkeypatch.setattr(sandbox, "_cache", cache)
    for i in range(40):
        sandbox.compiled("text", f"{i}: " + "{{ x }}" * 300)  # ~2 KB sources, ~20 KB each
    assert 150_000 < cache.bytes <= 200_000
    assert len(cache._entries) < 40  # the oldest went


def test_a_source_over_the_limit_is_refused() -> None:
    with pytest.raises(ExpressionTooLarge, match="over the limit"):
        evaluate("1 + " * 5000 + "1", {})


def _definition(**step: Any) -> dict[str, Any]:
    return {"name": "bombs", "steps": [{"key": "s", "type": "set", **step}]}


def test_a_definition_over_the_limits_is_refused_with_the_field() -> None:
    big = "{{ " + " ~ ".join(["'x'"] * 4000) + " }}"
    with pytest.raises(InvalidDefinition) as info:
        parse_definition(_definition(vars={"a": big}), step_type_specs())
    (error,) = info.value.errors
    assert error["type"] == "expression_too_large"
    assert error["loc"] == ["steps", 0, "vars"]
    many = {f"v{i}": "{{ '" + "x" * 10_000 + "' }}" for i in range(30)}  # 300 KB in all
    with pytest.raises(InvalidDefinition) as info:
        parse_definition(_definition(vars=many), step_type_specs())
    (error,) = info.value.errors
    assert error["type"] == "expression_too_large"
    assert error["loc"][:3] == ["steps", 0, "vars"]
    assert "add up to" in error["msg"]


def test_a_definition_with_a_bomb_saves_quickly_and_fails_when_run() -> None:
    """Saving compiles; it does not evaluate (the bomb goes off in a step, under its budget)."""
    started = time.thread_time()
    parse_definition(_definition(vars={"a": "{{ 'p' * 10**8 }}"}), step_type_specs())
    assert time.thread_time() - started < 5
