"""What the engine writes is clean JSON, on both databases, whatever steps produce.

An endpoint answering NaN, Infinity, lone surrogates and deep nesting (raw
text from a real local server), a ``set`` step whose expressions build the
same, an error whose details carry such a body, a payload forwarded to a child
run: every run finishes, the stored values hold U+FFFD, null and
``"<removed: too deep>"`` instead, and every view answers 200.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from conveyor.domain.jsonsafe import MAX_DEPTH, TOO_DEEP
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.services import repair as repair_service
from tests.api.helpers import TestClient, make_client
from tests.engine.conftest import Harness
from tests.engine.waits_support import history
from tests.support.bad_json import depth
from tests.support.http_server import HitServer

# Expressions building what JSON cannot hold: NaN, -Infinity, a lone surrogate
# (in a value and in a key).
NAN = "{{ 'nan'|float }}"
MINUS_INFINITY = "{{ '-inf'|float }}"
LONE = "{{ '%c'|format(55296) }}"
LONE_KEY = "{{ {('%c'|format(56320)): 1} }}"


def _stored_flaws(harness: Harness) -> dict[tuple[str, str], int]:
    """Rows with a flaw, per table and column, in every JSON column (what `repair` would fix)."""
    findings = repair_service.Findings()
    with harness.db.read() as conn:
        for target in repair_service.json_tables():
            after = None
            while True:
                after = repair_service.scan_page(conn, target, after, findings)
                if after is None:
                    break
    return {place: count.rows for place, count in findings.counts.items()}


def _client(harness: Harness) -> tuple[TestClient, dict[str, str]]:
    with harness.db.transaction() as conn:
        _, token = key_service.create_key(
            conn, tenant_id=harness.tenant, scopes=ALL_SCOPES, label="t", now=harness.clock.now()
        )
    return make_client(harness.db), {"Authorization": f"Bearer {token}"}


def _views_answer_200(harness: Harness, run_id: str, steps: list[str]) -> dict[str, Any]:
    """Every view of the run answers 200 with nothing to replace; the views by path."""
    client, auth = _client(harness)
    paths = [
        "/api/v1/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/steps",
        f"/api/v1/runs/{run_id}/events",
        *(f"/api/v1/runs/{run_id}/steps/{key}/output" for key in steps),
    ]
    bodies = {}
    for path in paths:
        response = client.get(path, headers=auth)
        assert response.status_code == 200, (path, response.text)
        bodies[path] = response.json()
    return bodies


def _flaws_of(harness: Harness, run_id: str, key: str) -> list[dict[str, str]]:
    lines = [e for e in history(harness.db, run_id) if e["type"] == "step.output_cleaned"]
    found = [e["data"] for e in lines if e["step_key"] == key]
    assert len(found) == 1, lines
    assert found[0]["replaced"] == len(found[0]["flaws"])
    return list(found[0]["flaws"])


def test_http_answers_and_set_outputs_are_stored_clean(
    harness: Harness, http_server: HitServer, caplog: pytest.LogCaptureFixture
) -> None:
    a = harness.automation(
        {
            "name": "bad-json",
            "steps": [
                {"key": "call", "type": "http_request", "url": f"{http_server.url}/bad-json/70"},
                # Too deep for Python's json to parse at all: cut while parsing.
                {"key": "abyss", "type": "http_request", "url": f"{http_server.url}/bad-json/3000"},
                {
                    "key": "compute",
                    "type": "set",
                    "vars": {
                        "nan": NAN,
                        "inf": MINUS_INFINITY,
                        "lone": LONE,
                        "keyed": LONE_KEY,
                        # The answer as stored, not as it came: a later step sees null.
                        "seen_a": "{{ steps.call.output.json.a }}",
                        # Ten more levels around the answer's 62: past 64 again.
                        "wrapped": "{{ [[[[[[[[[[ steps.call.output.json.deep ]]]]]]]]]] }}",
                    },
                },
            ],
        }
    )
    run_id = harness.trigger(a)
    with caplog.at_level(logging.WARNING, logger="conveyor.api.safe_json"):
        harness.work()
        assert harness.detail(run_id)["status"] == "completed"
        bodies = _views_answer_200(harness, run_id, ["call", "abyss", "compute"])
    assert not [r for r in caplog.records if r.name == "conveyor.api.safe_json"]
    assert _stored_flaws(harness) == {}

    call = bodies[f"/api/v1/runs/{run_id}/steps/call/output"]["result"]["json"]
    assert {k: v for k, v in call.items() if k != "deep"} == {
        "a": None,
        "b": "\ufffd",
        "c": None,
        "k\ufffd": 1,
        "ok": "café",
    }
    # The output is depth 1, its "json" 2, "deep" 3: arrays past 64 are cut.
    assert depth(call["deep"]) == MAX_DEPTH - 3 + 1
    assert TOO_DEEP in json.dumps(call["deep"])
    abyss = bodies[f"/api/v1/runs/{run_id}/steps/abyss/output"]["result"]["json"]
    assert abyss["a"] is None
    assert TOO_DEEP in json.dumps(abyss["deep"])

    compute = bodies[f"/api/v1/runs/{run_id}/steps/compute/output"]["result"]
    wrapped = compute.pop("wrapped")
    assert compute == {
        "nan": None,
        "inf": None,
        "lone": "\ufffd",
        "keyed": {"\ufffd": 1},
        "seen_a": None,
    }
    assert depth(wrapped) == MAX_DEPTH - 1  # the output is depth 1
    assert TOO_DEEP in json.dumps(wrapped)

    # A history line names each place replaced, never the content.
    deep_at = "/json/deep" + "/0" * (MAX_DEPTH - 2)  # the 65th container
    assert _flaws_of(harness, run_id, "call") == [
        {"kind": "non_finite", "pointer": "/json/a"},
        {"kind": "lone_surrogate", "pointer": "/json/b"},
        {"kind": "non_finite", "pointer": "/json/c"},
        {"kind": "lone_surrogate", "pointer": "/json/k\ufffd"},
        {"kind": "too_deep", "pointer": deep_at},
    ]
    assert len(_flaws_of(harness, run_id, "abyss")) == 5
    # "lone" is text the evaluator hands back already clean (text columns need
    # that); the surrogate in a key is the store's to replace, and said so.
    assert [f["kind"] for f in _flaws_of(harness, run_id, "compute")] == [
        "non_finite",
        "non_finite",
        "lone_surrogate",
        "too_deep",
    ]
    types = [e["type"] for e in history(harness.db, run_id) if e["step_key"] == "compute"]
    assert types == ["step.started", "step.output_cleaned", "step.completed"]


def test_error_details_and_forwarded_payloads_are_stored_clean(
    harness: Harness, http_server: HitServer, caplog: pytest.LogCaptureFixture
) -> None:
    harness.automation(
        {"name": "child", "steps": [{"key": "echo", "type": "set", "vars": {"x": 1}}]}
    )
    a = harness.automation(
        {
            "name": "forwards-then-fails",
            "steps": [
                {
                    "key": "start_child",
                    "type": "trigger_automation",
                    "automation": "child",
                    "payload": {"nan": NAN, "lone": LONE, "keyed": LONE_KEY},
                },
                {
                    # The answer is unexpected: the step fails with the body in its details.
                    "key": "call",
                    "type": "http_request",
                    "url": f"{http_server.url}/bad-json/70",
                    "expect_status": [201],
                },
            ],
        }
    )
    run_id = harness.trigger(a)
    with caplog.at_level(logging.WARNING):
        harness.work()
    detail = harness.detail(run_id)
    assert detail["status"] == "failed"
    assert detail["last_error"]["code"] == "unexpected_status"
    body = detail["last_error"]["details"]["body"]
    assert (body["a"], body["b"], body["c"]) == (None, "\ufffd", None)
    assert TOO_DEEP in json.dumps(body["deep"])
    # The error was cleaned as it was recorded; the payload by the store as the
    # child run was written (and history lines holding the error, nested deeper,
    # cut again). Each said so in the log, by place, never with the content.
    warnings = {r.name: r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert "non_finite at /details/body/a" in warnings["conveyor.engine.round_state"]
    assert "non_finite at /payload/nan, lone_surrogate at /payload/keyed/" in " ".join(
        r.getMessage() for r in caplog.records if r.name == "conveyor.store.json"
    )
    assert all("\ud800" not in r.getMessage() for r in caplog.records)

    child_id = detail["steps"][0]["result"]["child_run_id"]
    assert harness.detail(child_id)["status"] == "completed"
    views = _views_answer_200(harness, child_id, ["echo"])
    payload = views[f"/api/v1/runs/{child_id}"]["trigger_event"]["payload"]
    assert payload == {"nan": None, "lone": "\ufffd", "keyed": {"\ufffd": 1}}
    _views_answer_200(harness, run_id, ["start_child"])
    assert _stored_flaws(harness) == {}


def test_an_output_json_cannot_hold_fails_the_step(harness: Harness) -> None:
    # `now` is a datetime: the output cannot be stored as JSON at all.
    a = harness.automation(
        {"name": "when", "steps": [{"key": "s", "type": "set", "vars": {"at": "{{ now }}"}}]}
    )
    run_id = harness.trigger(a)
    harness.work()
    detail = harness.detail(run_id)
    assert detail["status"] == "failed"
    assert detail["last_error"]["code"] == "output_not_json"


def test_a_lone_surrogate_built_for_a_text_column_is_replaced(harness: Harness) -> None:
    # A concurrency key is a text column, not JSON: the store's cleaning does not
    # reach it, so the evaluator hands back text without lone surrogates.
    a = harness.automation(
        {
            "name": "keyed",
            "concurrency": {"key": "'%c'|format(55296) ~ 'k'", "limit": 1},
            "steps": [{"key": "s", "type": "set", "vars": {"t": "x{{ '%c'|format(56320) }}"}}],
        }
    )
    run_id = harness.trigger(a)
    harness.work()
    detail = harness.detail(run_id)
    assert detail["status"] == "completed", detail
    assert detail["concurrency_key"] == "\ufffdk"
    bodies = _views_answer_200(harness, run_id, ["s"])
    assert bodies[f"/api/v1/runs/{run_id}/steps/s/output"]["result"] == {"t": "x\ufffd"}
