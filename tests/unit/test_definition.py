"""Definition validation names each problem; the graph resolves default dependencies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import Dependency, build_graph, parse_definition
from conveyor.domain.errors import InvalidDefinition
from conveyor.domain.retry import NO_RETRY, RetryPolicy


def _set(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "type": "set", "vars": {"x": 1}, **extra}


def _defn(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "order-follow-up", **top, "steps": list(steps)}


def _parse(raw: dict[str, Any]) -> Any:
    return parse_definition(raw, step_type_specs())


def _problems(raw: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidDefinition) as info:
        _parse(raw)
    assert info.value.code == "invalid_definition"
    return info.value.errors


def _only(raw: dict[str, Any]) -> dict[str, Any]:
    problems = _problems(raw)
    assert len(problems) == 1, problems
    return problems[0]


def test_a_valid_definition_parses_with_its_settings() -> None:
    defn = _parse(
        {
            "name": "order-follow-up",
            "trigger": {
                "type": "event",
                "event": "order.completed",
                "filter": "event.payload.total > 50",
            },
            "concurrency": {"key": "identity.value", "limit": 2},
            "timeout": "PT2H",
            "retry": {
                "max_attempts": 3,
                "initial_delay": "PT10S",
                "backoff": 2.0,
                "max_delay": "PT10M",
            },
            "steps": [
                _set("remember", vars={"total": "{{ trigger.payload.total }}"}),
                {"key": "big", "type": "condition", "expression": "vars.total > 100"},
                {"key": "pause", "type": "delay", "duration": "PT1H", "depends_on": ["big.true"]},
                {
                    "key": "notify",
                    "type": "http_request",
                    "method": "POST",
                    "url": "https://crm.example/hooks/{{ contact.external_id }}",
                    "json": {"order": "{{ trigger.payload.order_id }}"},
                    "continue_on_error": True,
                },
            ],
        }
    )
    assert defn.timeout == timedelta(hours=2)
    assert defn.retry == RetryPolicy(
        max_attempts=3, initial_delay=timedelta(seconds=10), max_delay=timedelta(minutes=10)
    )
    assert defn.step("big").settings == {"expression": "vars.total > 100"}
    assert defn.step("notify").continue_on_error is True
    assert defn.step("notify").settings["json"] == {"order": "{{ trigger.payload.order_id }}"}


def test_unknown_step_type_is_named_with_the_known_ones() -> None:
    problem = _only(_defn(_set("a"), {"key": "b", "type": "send_fax"}))
    assert problem["loc"] == ["steps", 1, "type"]
    assert problem["type"] == "unknown_step_type"
    assert "'send_fax'" in problem["msg"]
    assert f"(known: {', '.join(sorted(step_type_specs()))})" in problem["msg"]


def test_duplicate_step_key() -> None:
    problem = _only(_defn(_set("a"), _set("b"), _set("a")))
    assert problem == {
        "loc": ["steps", 2, "key"],
        "msg": "duplicate step key 'a'",
        "type": "duplicate_key",
    }


def test_two_step_cycle() -> None:
    problem = _only(_defn(_set("a", depends_on=["b"]), _set("b", depends_on=["a"])))
    assert problem["type"] == "dependency_cycle"
    assert problem["msg"] == "dependency cycle: a -> b -> a"


def test_three_step_cycle_names_every_step_on_it() -> None:
    problem = _only(
        _defn(
            _set("a", depends_on=["c"]),
            _set("b", depends_on=["a"]),
            _set("c", depends_on=["b"]),
        )
    )
    assert problem["type"] == "dependency_cycle"
    assert problem["loc"] == ["steps"]
    assert problem["msg"] == "dependency cycle: a -> c -> b -> a"


def test_a_cycle_through_branches_is_still_a_cycle() -> None:
    problem = _only(
        _defn(
            {"key": "c", "type": "condition", "expression": "true", "depends_on": ["s"]},
            _set("s", depends_on=["c.true"]),
        )
    )
    assert problem["type"] == "dependency_cycle"


def test_step_depending_on_itself() -> None:
    problem = _only(_defn(_set("a", depends_on=["a"])))
    assert problem["type"] == "dependency_cycle"
    assert problem["loc"] == ["steps", 0, "depends_on", 0]


def test_unknown_step_in_depends_on() -> None:
    problem = _only(_defn(_set("a"), _set("b", depends_on=["a", "ghost"])))
    assert problem == {
        "loc": ["steps", 1, "depends_on", 1],
        "msg": "unknown step 'ghost' in depends_on",
        "type": "unknown_dependency",
    }


def test_unknown_branch_lists_the_branches_the_step_has() -> None:
    problem = _only(
        _defn(
            {"key": "big", "type": "condition", "expression": "true"},
            _set("a", depends_on=["big.maybe"]),
        )
    )
    assert problem["type"] == "unknown_branch"
    assert problem["loc"] == ["steps", 1, "depends_on", 0]
    assert "no branch 'maybe'" in problem["msg"]
    assert "false, true" in problem["msg"]


def test_a_branch_of_a_step_without_branches() -> None:
    problem = _only(_defn(_set("a"), _set("b", depends_on=["a.true"])))
    assert problem["type"] == "unknown_branch"
    assert "(its branches: none)" in problem["msg"]


@pytest.mark.parametrize("step_type", ["condition", "filter"])
def test_bad_expression_in_a_step(step_type: str) -> None:
    problem = _only(_defn({"key": "c", "type": step_type, "expression": "total >"}))
    assert problem["loc"] == ["steps", 0, "expression"]
    assert problem["type"] == "bad_expression"
    assert "'total >'" in problem["msg"]


def test_bad_expression_in_the_trigger_filter() -> None:
    problem = _only(
        _defn(_set("a"), trigger={"type": "event", "event": "order.completed", "filter": "x =="})
    )
    assert problem["loc"] == ["trigger", "filter"]
    assert problem["type"] == "bad_expression"


def test_bad_expression_in_the_schedule_audience() -> None:
    problem = _only(
        _defn(_set("a"), trigger={"type": "schedule", "cron": "0 9 * * *", "audience": "a b"})
    )
    assert problem["loc"] == ["trigger", "audience"]
    assert problem["type"] == "bad_expression"


def test_bad_expression_in_the_concurrency_key() -> None:
    problem = _only(_defn(_set("a"), concurrency={"key": "identity.value (", "limit": 1}))
    assert problem["loc"] == ["concurrency", "key"]
    assert problem["type"] == "bad_expression"


def test_bad_template_in_a_string_setting_nested_anywhere() -> None:
    problem = _only(_defn(_set("a", vars={"deep": ["ok", {"x": "{{ trigger.payload.total "}]})))
    assert problem["loc"] == ["steps", 0, "vars"]
    assert problem["type"] == "bad_template"
    assert "trigger.payload.total" in problem["msg"]


def test_every_problem_is_listed_at_once() -> None:
    problems = _problems(
        _defn(
            {"key": "c", "type": "condition", "expression": "1 +"},
            {"key": "f", "type": "filter", "expression": "x ==="},
            {"key": "h", "type": "http_request", "url": "https://x.example/{{ a"},
        )
    )
    assert [(p["loc"], p["type"]) for p in problems] == [
        (["steps", 0, "expression"], "bad_expression"),
        (["steps", 1, "expression"], "bad_expression"),
        (["steps", 2, "url"], "bad_template"),
    ]


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        (
            {"key": "d", "type": "delay", "duration": "PT1M", "until": "2026-01-01T00:00:00Z"},
            "exactly one of `duration` or `until`",
        ),
        ({"key": "d", "type": "delay"}, "exactly one of `duration` or `until`"),
        ({"key": "d", "type": "delay", "duration": "-PT1M"}, "cannot be negative"),
        ({"key": "h", "type": "http_request", "url": "ftp://files.example"}, "http:// or https://"),
        (
            {
                "key": "h",
                "type": "http_request",
                "url": "https://x.example",
                "json": {},
                "body": "b",
            },
            "`json` or `body`, not both",
        ),
    ],
)
def test_step_settings_errors(step: dict[str, Any], fragment: str) -> None:
    problem = _only(_defn(step))
    assert problem["loc"][:2] == ["steps", 0]
    assert fragment in problem["msg"]


@pytest.mark.parametrize(
    ("step", "loc", "kind"),
    [
        (
            {"key": "d", "type": "delay", "until": "2026-01-01T00:00:00"},
            ["until"],
            "timezone_aware",
        ),
        (
            {"key": "h", "type": "http_request", "url": "https://x", "method": "FETCH"},
            ["method"],
            "literal_error",
        ),
        ({"key": "s", "type": "set", "vars": {}, "colour": "red"}, ["colour"], "extra_forbidden"),
        ({"key": "s", "type": "set"}, ["vars"], "missing"),
        ({"key": "c", "type": "condition"}, ["expression"], "missing"),
    ],
)
def test_step_settings_field_errors_point_at_the_field(
    step: dict[str, Any], loc: list[str], kind: str
) -> None:
    problem = _only(_defn(step))
    assert problem["loc"] == ["steps", 0, *loc]
    assert problem["type"] == kind


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"name": "Not A Slug", "steps": [_set("a")]}, ["name"]),
        ({"name": "ok", "steps": []}, ["steps"]),
        ({"name": "ok", "steps": [_set("1bad")]}, ["steps", 0, "key"]),
        ({"name": "ok", "unknown": 1, "steps": [_set("a")]}, ["unknown"]),
        ({"name": "ok", "trigger": {"type": "event"}, "steps": [_set("a")]}, ["trigger"]),
        ({"name": "ok", "trigger": {"type": "schedule"}, "steps": [_set("a")]}, ["trigger"]),
        (
            {"name": "ok", "trigger": {"type": "automation_failure"}, "steps": [_set("a")]},
            ["trigger"],
        ),
        (
            {"name": "ok", "concurrency": {"key": "k", "limit": 0}, "steps": [_set("a")]},
            ["concurrency", "limit"],
        ),
    ],
)
def test_shape_errors_are_reported_with_their_location(
    raw: dict[str, Any], loc: list[str | int]
) -> None:
    assert loc in [p["loc"] for p in _problems(raw)]


def test_invalid_definition_message_lists_locations() -> None:
    with pytest.raises(InvalidDefinition, match=r"steps\.1\.key: duplicate step key 'a'"):
        _parse(_defn(_set("a"), _set("a")))


def test_a_step_without_depends_on_follows_the_previous_step() -> None:
    graph = build_graph(_parse(_defn(_set("a"), _set("b"), _set("c"))))
    assert graph.order == ("a", "b", "c")
    assert graph.deps == {
        "a": (),
        "b": (Dependency("a"),),
        "c": (Dependency("b"),),
    }


def test_an_empty_depends_on_makes_a_root() -> None:
    graph = build_graph(_parse(_defn(_set("a"), _set("b", depends_on=[]), _set("c"))))
    assert graph.deps["b"] == ()
    assert graph.deps["c"] == (Dependency("b"),)


def test_depends_on_may_name_a_later_step_and_order_is_topological() -> None:
    graph = build_graph(
        _parse(_defn(_set("late", depends_on=["early"]), _set("early", depends_on=[])))
    )
    assert graph.order == ("early", "late")


def test_branch_dependencies_are_parsed() -> None:
    graph = build_graph(
        _parse(
            _defn(
                {"key": "big", "type": "condition", "expression": "true"},
                _set("yes", depends_on=["big.true"]),
                _set("no", depends_on=["big.false"]),
            )
        )
    )
    assert graph.deps["yes"] == (Dependency("big", "true"),)
    assert graph.deps["no"] == (Dependency("big", "false"),)
    assert graph.children["big"] == ("yes", "no")


def test_dependency_parse() -> None:
    assert Dependency.parse("wait") == Dependency("wait", None)
    assert Dependency.parse("wait.timed_out") == Dependency("wait", "timed_out")


def test_downstream_is_transitive_and_excludes_the_step() -> None:
    #   a -> b -> d
    #   a -> c -> d -> e ;  f is unrelated
    graph = build_graph(
        _parse(
            _defn(
                _set("a"),
                _set("b", depends_on=["a"]),
                _set("c", depends_on=["a"]),
                _set("d", depends_on=["b", "c"]),
                _set("e"),
                _set("f", depends_on=[]),
            )
        )
    )
    assert graph.downstream("a") == {"b", "c", "d", "e"}
    assert graph.downstream("c") == {"d", "e"}
    assert graph.downstream("e") == set()
    assert graph.downstream("f") == set()


def test_retry_policy_precedence() -> None:
    step_policy = {"max_attempts": 5}
    defn = _parse(
        _defn(_set("own", retry=step_policy), _set("inherits"), retry={"max_attempts": 2})
    )
    assert defn.retry_policy(defn.step("own")).max_attempts == 5
    assert defn.retry_policy(defn.step("inherits")).max_attempts == 2
    plain = _parse(_defn(_set("a")))
    assert plain.retry_policy(plain.step("a")) is NO_RETRY
    assert NO_RETRY.max_attempts == 1


def test_step_lookup_of_a_missing_key() -> None:
    defn = _parse(_defn(_set("a")))
    with pytest.raises(KeyError):
        defn.step("b")


def test_template_settings_are_checked_after_rendering_not_when_saved() -> None:
    defn = _parse(
        {
            "name": "templated",
            "steps": [
                {"key": "call", "type": "http_request", "url": "{{ vars.url }}"},
                {"key": "pause", "type": "delay", "duration": "{{ vars.wait }}"},
            ],
        }
    )
    assert defn.steps[0].settings["url"] == "{{ vars.url }}"


def test_a_template_does_not_hide_errors_in_other_settings() -> None:
    with pytest.raises(InvalidDefinition) as info:
        _parse(
            {
                "name": "templated",
                "steps": [
                    {
                        "key": "call",
                        "type": "http_request",
                        "url": "{{ vars.url }}",
                        "method": "FETCH",
                    },
                ],
            }
        )
    assert [e["loc"] for e in info.value.errors] == [["steps", 0, "method"]]


# -- every problem of every phase at once ----------------------------------------


def _kinds(raw: dict[str, Any]) -> list[tuple[list[str | int], str]]:
    return [(p["loc"], p["type"]) for p in _problems(raw)]


def test_an_unknown_dependency_does_not_hide_a_cycle() -> None:
    problems = _problems(_defn(_set("a", depends_on=["b"]), _set("b", depends_on=["a", "ghost"])))
    assert [(p["loc"], p["type"]) for p in problems] == [
        (["steps", 1, "depends_on", 1], "unknown_dependency"),
        (["steps"], "dependency_cycle"),
    ]
    assert problems[1]["msg"] == "dependency cycle: a -> b -> a"


def test_settings_and_expression_errors_do_not_hide_a_cycle() -> None:
    assert _kinds(
        _defn(
            {"key": "c", "type": "condition", "expression": "1 +", "depends_on": ["s"]},
            {"key": "s", "type": "set", "depends_on": ["c.true"]},  # `vars` missing
        )
    ) == [
        (["steps", 0, "expression"], "bad_expression"),
        (["steps", 1, "vars"], "missing"),
        (["steps"], "dependency_cycle"),
    ]


def test_every_cycle_is_named() -> None:
    problems = _problems(
        _defn(
            _set("a", depends_on=["b"]),
            _set("b", depends_on=["a"]),
            _set("c", depends_on=["d"]),
            _set("d", depends_on=["c"]),
            _set("e", depends_on=["a"]),
        )
    )
    assert [p["msg"] for p in problems] == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: c -> d -> c",
    ]


def test_a_cycle_through_a_default_dependency_is_found_beside_other_problems() -> None:
    # b follows a by default; a depends on b: a cycle, next to a duplicate key.
    assert _kinds(_defn(_set("a", depends_on=["b"]), _set("b"), _set("b", depends_on=[]))) == [
        (["steps", 2, "key"], "duplicate_key"),
        (["steps"], "dependency_cycle"),
    ]


def test_shape_errors_do_not_hide_the_other_phases() -> None:
    problems = _kinds(
        {
            "name": "Not A Slug",
            "timeout": "soon",
            "trigger": {"type": "event", "event": "order.completed", "filter": "x =="},
            "steps": [
                _set("a", depends_on=["b"]),
                _set("b", depends_on=["a"]),
                {"key": "c", "type": "condition", "expression": "total >"},
                _set("d", depends_on=["ghost"]),
                {"key": "e", "type": "send_fax"},
            ],
        }
    )
    assert problems == [
        (["name"], "string_pattern_mismatch"),
        (["timeout"], "time_delta_parsing"),
        (["trigger", "filter"], "bad_expression"),
        (["steps", 2, "expression"], "bad_expression"),
        (["steps", 4, "type"], "unknown_step_type"),
        (["steps", 3, "depends_on", 0], "unknown_dependency"),
        (["steps"], "dependency_cycle"),
    ]


def test_a_step_with_a_bad_shape_still_counts_as_a_step_for_references() -> None:
    """Its key is known, so depending on it is not "unknown"; the rest is checked."""
    problems = _kinds(
        _defn(
            _set("a", retry={"max_attempts": "many"}),
            _set("b", depends_on=["a", "ghost"]),
            {"key": "c", "type": "filter", "expression": "x ==="},
        )
    )
    assert problems == [
        (["steps", 0, "retry", "max_attempts"], "int_type"),
        (["steps", 2, "expression"], "bad_expression"),
        (["steps", 1, "depends_on", 1], "unknown_dependency"),
    ]


def test_a_branch_of_a_step_of_unknown_type_is_not_judged() -> None:
    assert _kinds(
        _defn({"key": "x", "type": "send_fax"}, _set("y", depends_on=["x.sent", "y"]))
    ) == [
        (["steps", 0, "type"], "unknown_step_type"),
        (["steps", 1, "depends_on", 1], "dependency_cycle"),
    ]


def test_too_much_source_skips_compiling_but_not_the_graph() -> None:
    big = "{{ '" + "x" * 300_000 + "' }}"
    problems = _kinds(
        _defn(
            _set("a", vars={"big": big}, depends_on=["b"]),
            _set("b", depends_on=["a"]),
            {"key": "c", "type": "condition", "expression": "1 +"},  # not compiled
        )
    )
    assert problems == [
        (["steps", 0, "vars", "big"], "expression_too_large"),
        (["steps"], "dependency_cycle"),
    ]


def test_more_steps_than_allowed_is_one_problem() -> None:
    problems = _problems(_defn(*[_set(f"s{i}", depends_on=["ghost"]) for i in range(501)]))
    assert [(p["loc"], p["type"]) for p in problems] == [(["steps"], "too_long")]


def test_cycles_named_are_capped() -> None:
    pairs = [
        step
        for i in range(15)
        for step in (_set(f"a{i}", depends_on=[f"b{i}"]), _set(f"b{i}", depends_on=[f"a{i}"]))
    ]
    problems = _problems(_defn(*pairs))
    assert len(problems) == 10
    assert {p["type"] for p in problems} == {"dependency_cycle"}
