"""Validation reports every problem of every phase, and of every document, at once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.domain.errors import EgressDenied, InvalidDefinition
from conveyor.services import automations as service
from conveyor.store.db import Database
from conveyor.store.tables import automation_versions, automations
from tests.api.helpers import DEFINITION, TestClient, assert_problem, count

BASE = "/api/v1/automations"
NOW = datetime(2026, 6, 1, tzinfo=UTC)

# One of each: a bad cron, a URL the egress policy refuses, an unknown
# dependency and a cycle (which the unknown dependency used to hide).
EVERYTHING_WRONG: dict[str, Any] = {
    "name": "everything-wrong",
    "trigger": {"type": "schedule", "cron": "61 * * * *"},
    "steps": [
        {"key": "call", "type": "http_request", "url": "http://127.0.0.1:9000/hook"},
        {"key": "a", "type": "set", "vars": {"x": 1}, "depends_on": ["b", "ghost"]},
        {"key": "b", "type": "set", "vars": {"x": 2}, "depends_on": ["a"]},
    ],
}


def _bad(name: str) -> dict[str, Any]:
    return {"name": name, "steps": [{"key": "a", "type": "nope"}]}


def test_the_api_lists_every_problem_of_every_phase(
    db: Database, client: TestClient, auth: dict[str, str]
) -> None:
    response = client.post(BASE, json=EVERYTHING_WRONG, headers=auth)
    body = assert_problem(response, 422, "invalid_definition")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["steps", 1, "depends_on", 1], "unknown_dependency"),
        (["steps"], "dependency_cycle"),
        (["trigger", "cron"], "bad_cron"),
        (["steps", 0, "url"], "egress_denied"),
    ]
    assert count(db, automations) == 0


def test_a_name_like_an_id_is_named_beside_shape_errors(
    client: TestClient, auth: dict[str, str]
) -> None:
    definition = {
        "name": "0190a1b2-0000-7000-8000-000000000000",
        "enabled": "perhaps",
        "steps": [{"key": "a", "type": "set", "vars": {"x": 1}, "depends_on": ["a"]}],
    }
    body = assert_problem(
        client.post(BASE, json=definition, headers=auth), 422, "invalid_definition"
    )
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["enabled"], "bool_type"),
        (["steps", 0, "depends_on", 0], "dependency_cycle"),
        (["name"], "name_is_id"),
    ]


def test_egress_alone_keeps_its_own_code(client: TestClient, auth: dict[str, str]) -> None:
    definition = {**DEFINITION, "steps": EVERYTHING_WRONG["steps"][:1]}
    body = assert_problem(client.post(BASE, json=definition, headers=auth), 422, "egress_denied")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["steps", 0, "url"], "egress_denied")
    ]


def test_every_document_of_an_apply_is_checked_before_any_is_saved(
    db: Database, tenant: dict[str, Any]
) -> None:
    documents = [DEFINITION, _bad("first-bad"), {**DEFINITION, "name": "fine"}, EVERYTHING_WRONG]
    with pytest.raises(InvalidDefinition) as info, db.transaction() as conn:
        service.apply_automations(conn, tenant["id"], documents, now=NOW)
    assert [(e["loc"], e["type"]) for e in info.value.errors] == [
        (["documents", 1, "steps", 0, "type"], "unknown_step_type"),
        (["documents", 3, "steps", 1, "depends_on", 1], "unknown_dependency"),
        (["documents", 3, "steps"], "dependency_cycle"),
        (["documents", 3, "trigger", "cron"], "bad_cron"),
        (["documents", 3, "steps", 0, "url"], "egress_denied"),
    ]
    assert "documents.1.steps.0.type: unknown step type 'nope'" in info.value.detail
    assert (count(db, automations), count(db, automation_versions)) == (0, 0)


def test_egress_refusals_of_several_documents_are_one_egress_problem(
    db: Database, tenant: dict[str, Any]
) -> None:
    call = EVERYTHING_WRONG["steps"][0]
    documents = [{**DEFINITION, "steps": [call]}, {**DEFINITION, "name": "two", "steps": [call]}]
    with pytest.raises(EgressDenied) as info, db.transaction() as conn:
        service.apply_automations(conn, tenant["id"], documents, now=NOW)
    assert [e["loc"] for e in info.value.errors] == [
        ["documents", 0, "steps", 0, "url"],
        ["documents", 1, "steps", 0, "url"],
    ]
    assert count(db, automations) == 0


def test_valid_documents_are_all_applied(db: Database, tenant: dict[str, Any]) -> None:
    documents = [DEFINITION, {**DEFINITION, "name": "fine"}, {**DEFINITION, "enabled": False}]
    with db.transaction() as conn:
        applied = service.apply_automations(conn, tenant["id"], documents, now=NOW)
    assert [(a["name"], a["version"], created) for a, created in applied] == [
        ("order-follow-up", 1, True),
        ("fine", 1, True),
        ("order-follow-up", 2, False),
    ]
    # A single document keeps its plain locations.
    with pytest.raises(InvalidDefinition) as info, db.transaction() as conn:
        service.apply_automations(conn, tenant["id"], [_bad("alone")], now=NOW)
    assert [e["loc"] for e in info.value.errors] == [["steps", 0, "type"]]
