"""Error responses in general, health probes and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.services import automations as automation_service
from conveyor.store.db import Database
from tests.api.helpers import TestClient, assert_problem, make_client
from tests.api.test_auth import ROUTES, UNSCOPED_ROUTES


def test_unknown_route_is_404_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/api/v1/nothing"), 404, "not_found")
    assert "/api/v1/nothing" in body["detail"]


def test_wrong_method_is_405_problem_with_allow(client: TestClient) -> None:
    response = client.patch("/api/v1/automations")
    assert_problem(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_unexpected_error_is_500_without_internals(
    db: Database,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*_args: object, **_kw: object) -> None:
        raise RuntimeError("secret database password is hunter2")

    monkeypatch.setattr(automation_service, "list_automations", explode)
    client = make_client(db, raise_server_exceptions=False)
    response = client.get("/api/v1/automations", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 500, "internal_error")
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "hunter2" in caplog.text  # logged for operators instead


def test_health_probes(db: Database, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


def test_readyz_is_503_on_an_unmigrated_database(tmp_path: Path) -> None:
    empty = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert_problem(make_client(empty).get("/readyz"), 503, "not_ready")
        assert make_client(empty).get("/healthz").status_code == 200
    finally:
        empty.dispose()


# PUT on these creates what is missing, so it never answers 404.
UPSERTS = {("put", "/api/v1/templates/{name}")}


def test_openapi_declares_problem_responses(sqlite_db: Database) -> None:
    spec = make_client(sqlite_db).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"ProblemDetail", "ValidationProblem", "AutomationDefinition", "StepDef"} <= set(schemas)
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1")
        for method, op in item.items()
    ]
    assert len(operations) == len(ROUTES) + len(UNSCOPED_ROUTES)
    for path, method, op in operations:
        responses = op["responses"]
        # Signing out needs no key (so no 401), but it may fail the CSRF check.
        expected = ("403",) if (method, path) == ("delete", "/api/v1/session") else ("401", "403")
        for status in expected:
            assert status in responses, (method, path, status)
        if method in ("post", "put", "patch", "delete"):
            assert "415" in responses, (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                content = response["content"]
                assert list(content) == ["application/problem+json"], (method, path, status)
        if "{" in path and (method, path) not in UPSERTS:
            assert "404" in responses, (method, path)
        if method in ("post", "put"):
            assert {"413", "422"} <= set(responses), (method, path)
        assert op.get("description"), (method, path)
    create = spec["paths"]["/api/v1/automations"]["post"]
    body_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["$ref"] == "#/components/schemas/AutomationDefinition"
    assert "HTTPValidationError" not in schemas
