"""U+0000 (NUL) in a query or path parameter: 422 ``validation_error``, never a 500.

PostgreSQL keeps NUL neither in text nor in jsonb, and refuses it even in a
comparison, so a filter or an id holding one failed the whole request there
(found by schemathesis: ``GET /api/v1/automations?trigger_type=%00``). It is
refused before the endpoint runs, on both databases alike, with the
parameter's ``loc``. In JSON bodies it is a 400 ``malformed_json``
(tests/api/test_json_hygiene.py).
"""

from __future__ import annotations

import pytest

from tests.api.helpers import DEFINITION, TestClient, assert_problem

NUL = "%00"

QUERIES = [
    ("/api/v1/automations", "trigger_type", f"manual{NUL}"),
    ("/api/v1/runs", "automation_name", f"a{NUL}"),
    ("/api/v1/runs", "tag", f"vip{NUL}"),
    ("/api/v1/runs", "identity", f"email:a{NUL}@x.org"),
    ("/api/v1/runs", "concurrency_key", f"k{NUL}"),
    ("/api/v1/runs/stream", "automation_name", f"a{NUL}"),
    ("/api/v1/automations/{automation}/runs", "tag", f"a{NUL}"),
    ("/api/v1/audit", "action", f"key.created{NUL}"),
    ("/api/v1/contacts", "email", f"a{NUL}@x.org"),
    ("/api/v1/contacts", "external_id", f"c{NUL}"),
    ("/api/v1/contacts", "attribute", f"plan:pro{NUL}"),
    ("/api/v1/events", "name", f"order{NUL}"),
    ("/api/v1/templates", "channel", f"email{NUL}"),
    ("/api/v1/messages", "template", f"t{NUL}"),
    ("/api/v1/dry-run-results", "result_type", f"run{NUL}"),
    ("/api/v1/keys", "cursor", f"x{NUL}"),
]

PATHS = [
    ("GET", f"/api/v1/automations/a{NUL}b", "automation_id"),
    ("POST", f"/api/v1/automations/a{NUL}b/trigger", "automation_id"),
    ("GET", f"/api/v1/events/e{NUL}1", "event_id"),
    ("GET", f"/api/v1/templates/t{NUL}1", "name"),
    ("DELETE", f"/api/v1/templates/t{NUL}1", "name"),
    ("GET", f"/api/v1/runs/{{run}}/steps/s{NUL}1/output", "step_key"),
]


@pytest.fixture
def ids(client: TestClient, auth: dict[str, str]) -> dict[str, str]:
    """An automation and a run to put in paths."""
    automation = client.post("/api/v1/automations", json=DEFINITION, headers=auth)
    assert automation.status_code == 201, automation.text
    run = client.post(f"/api/v1/automations/{DEFINITION['name']}/trigger", json={}, headers=auth)
    assert run.status_code == 202, run.text
    return {"automation": automation.json()["id"], "run": run.json()["id"]}


@pytest.mark.parametrize(("path", "name", "value"), QUERIES, ids=lambda v: str(v))
def test_nul_in_a_query_parameter_is_422_with_its_loc(
    client: TestClient,
    auth: dict[str, str],
    ids: dict[str, str],
    path: str,
    name: str,
    value: str,
) -> None:
    response = client.get(f"{path.format(**ids)}?{name}={value}", headers=auth)
    problem = assert_problem(response, 422, "validation_error")
    [error] = problem["errors"]
    assert error["loc"] == ["query", name]
    assert error["type"] == "nul_character"
    assert "U+0000" in error["msg"]


@pytest.mark.parametrize(("method", "path", "name"), PATHS, ids=lambda v: str(v))
def test_nul_in_a_path_parameter_is_422_with_its_loc(
    client: TestClient,
    auth: dict[str, str],
    ids: dict[str, str],
    method: str,
    path: str,
    name: str,
) -> None:
    body = {} if method == "POST" else None
    response = client.request(method, path.format(**ids), json=body, headers=auth)
    problem = assert_problem(response, 422, "validation_error")
    [error] = problem["errors"]
    assert error["loc"] == ["path", name]
    assert error["type"] == "nul_character"


def test_a_nul_in_a_parameter_name_is_refused_and_shown_replaced(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/runs?ta{NUL}g=x", headers=auth)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["query", "ta\ufffdg"]


def test_a_body_text_field_with_nul_is_refused_where_it_is(
    client: TestClient, auth: dict[str, str]
) -> None:
    # A plain text column (a template's subject), not only JSON: a 500 on PostgreSQL before.
    response = client.put(
        "/api/v1/templates/receipt",
        json={"channel": "email", "subject": "Thanks\x00", "text": "Hello"},
        headers=auth,
    )
    problem = assert_problem(response, 400, "malformed_json")
    assert problem["pointer"] == "/subject"
    assert client.get("/api/v1/templates/receipt", headers=auth).status_code == 404


def test_the_same_filters_without_nul_are_answered(
    client: TestClient, auth: dict[str, str], ids: dict[str, str]
) -> None:
    for path, name, value in QUERIES:
        if name == "cursor" or path.endswith("/stream"):
            continue  # a cursor of ours has no NUL; a live stream would not end
        clean = value.replace(NUL, "")
        response = client.get(f"{path.format(**ids)}?{name}={clean}", headers=auth)
        assert response.status_code == 200, (path, name, response.text)
