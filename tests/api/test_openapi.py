"""The OpenAPI document says what the server does: names, errors, steps, ids, streams, examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from conveyor.actions.registry import registry
from conveyor.api.app import ROUTERS, create_app
from conveyor.api.errors import PROBLEM_JSON
from conveyor.api.openapi import UUID_PARAMETERS, load_examples
from conveyor.api.operations import OPERATIONS
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.helpers import TestClient, assert_problem

AUTOMATION = {"name": "order", "steps": [{"key": "s", "type": "set", "vars": {"x": 1}}]}


@pytest.fixture(scope="module")
def app_and_schema(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi')}/unused.db"
    app = create_app(Settings(database_url=url))
    return app, app.openapi()


@pytest.fixture(scope="module")
def schema(app_and_schema: tuple[Any, dict[str, Any]]) -> dict[str, Any]:
    return app_and_schema[1]


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), url, op)
        for url, path in schema["paths"].items()
        for method, op in path.items()
    ]


def test_every_operation_has_a_chosen_id_and_summary(schema: dict[str, Any]) -> None:
    seen = {(method, url) for method, url, _ in operations(schema)}
    assert seen == set(OPERATIONS), "operations.OPERATIONS and the routes differ"
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids))
    for method, url, op in operations(schema):
        assert re.fullmatch(r"[a-z]+[A-Za-z]*", op["operationId"]), (method, url)
        assert op["summary"] == OPERATIONS[(method, url)].summary
        assert "_api_v1_" not in op["operationId"]


def test_every_error_is_a_problem_and_every_422_lists_its_errors(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert "errors" in components["ValidationProblem"]["required"]
    assert "HTTPValidationError" not in components
    for method, url, op in operations(schema):
        for status, response in op["responses"].items():
            if status[0] not in "45":
                continue
            assert list(response["content"]) == [PROBLEM_JSON], (method, url, status)
            ref = response["content"][PROBLEM_JSON]["schema"]["$ref"]
            expected = "ValidationProblem" if status == "422" else "ProblemDetail"
            assert ref.endswith("/" + expected), (method, url, status)
        if url.startswith("/api/"):
            assert {"429", "503"} <= op["responses"].keys(), (method, url)


def test_domain_422s_carry_errors_too(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    created = client.post("/api/v1/automations", json=AUTOMATION, headers=auth)
    assert created.status_code == 201, created.text
    trigger = "/api/v1/automations/order/trigger"
    bad_identity = client.post(
        trigger, json={"identity": {"type": "nonsense", "value": "x"}}, headers=auth
    )
    unknown_contact = client.post(
        trigger, json={"identity": {"type": "contact_id", "value": "nobody"}}, headers=auth
    )
    key = {**auth, "Idempotency-Key": "k-1"}
    assert client.post(trigger, json={"payload": {"a": 1}}, headers=key).status_code == 202
    reused = client.post(trigger, json={"payload": {"a": 2}}, headers=key)
    run = client.post(trigger, json={}, headers=auth).json()
    cancel = client.post(f"/api/v1/runs/{run['id']}/cancel", json={}, headers=auth)
    assert cancel.status_code == 200, cancel.text
    bad_retry = client.post(
        f"/api/v1/runs/{run['id']}/retry", json={"mode": "from_step"}, headers=auth
    )
    for response in (bad_identity, unknown_contact, reused, bad_retry):
        assert response.status_code == 422, response.text
        body = assert_problem(response, 422, response.json()["code"])
        assert body["errors"], body
        for item in body["errors"]:
            assert set(item) == {"loc", "msg", "type"}
    codes = {r.json()["code"] for r in (bad_identity, unknown_contact, reused, bad_retry)}
    assert "idempotency_key_reused" in codes
    assert "invalid_retry" in codes


def test_each_step_type_is_described_with_its_own_settings(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    union = components["StepDef"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(registry())
    for step_type, action in registry().items():
        ref = union["discriminator"]["mapping"][step_type]
        variant = components[ref.rsplit("/", 1)[1]]
        assert variant["properties"]["type"]["const"] == step_type
        assert variant["additionalProperties"] is False
        settings = action.settings_model.model_json_schema(by_alias=True)["properties"]
        for name in settings:
            assert name in variant["properties"], (step_type, name)
    http = components["HttpRequestStep"]
    assert "url" in http["required"]
    assert http["properties"]["method"]["anyOf"][-1]["$ref"].endswith("/TemplateString")
    steps = components["AutomationDefinition"]["properties"]["steps"]["items"]
    assert steps["$ref"].endswith("/StepDef")


def test_a_plugin_step_type_appears_in_the_schema(tmp_path: Path) -> None:
    """A step type installed as a `conveyor.actions` entry point gets its own schema."""
    (tmp_path / "conveyor_ping_plugin.py").write_text(
        textwrap.dedent(
            '''
            from typing import ClassVar
            from pydantic import BaseModel, ConfigDict, Field

            class PingSettings(BaseModel):
                """Ping a host."""
                model_config = ConfigDict(extra="forbid")
                host: str = Field(description="the host to ping")
                count: int = Field(3, ge=1, description="how many pings")

            class PingAction:
                step_type: ClassVar[str] = "ping"
                settings_model = PingSettings
                branches: ClassVar[frozenset[str]] = frozenset()
                raw_fields: ClassVar[frozenset[str]] = frozenset()
                inline: ClassVar[bool] = True
            '''
        )
    )
    dist = tmp_path / "conveyor_ping_plugin-1.0.dist-info"
    dist.mkdir()
    metadata = "Metadata-Version: 2.1\nName: conveyor-ping-plugin\nVersion: 1.0\n"
    (dist / "METADATA").write_text(metadata)
    (dist / "entry_points.txt").write_text(
        "[conveyor.actions]\nping = conveyor_ping_plugin:PingAction\n"
    )
    script = (
        "import json; from conveyor.api.app import create_app; "
        "from conveyor.settings import Settings; "
        f"s = create_app(Settings(database_url='sqlite:///{tmp_path}/x.db')).openapi(); "
        "print(json.dumps(s['components']['schemas']['PingStep']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    ping = json.loads(out.stdout)
    assert ping["properties"]["type"]["const"] == "ping"
    assert ping["properties"]["host"]["description"] == "the host to ping"
    assert ping["properties"]["count"]["anyOf"][0]["minimum"] == 1
    assert "host" in ping["required"]


def test_generated_ids_are_uuids(schema: dict[str, Any]) -> None:
    found = set()
    for _, _, op in operations(schema):
        for parameter in op.get("parameters", []):
            if parameter["name"] in UUID_PARAMETERS and parameter["in"] == "path":
                assert parameter["schema"]["format"] == "uuid"
                found.add(parameter["name"])
            if parameter["name"] == "automation_id" and parameter["in"] == "path":
                assert "format" not in parameter["schema"]  # an id or a name
    assert found == UUID_PARAMETERS


def test_streams_are_event_streams(schema: dict[str, Any]) -> None:
    runs = schema["paths"]["/api/v1/runs/stream"]["get"]["responses"]["200"]["content"]
    assert list(runs) == ["text/event-stream"]
    events = {
        shape["properties"]["event"]["const"]: shape["properties"]["data"]["contentSchema"]
        for shape in runs["text/event-stream"]["schema"]["oneOf"]
    }
    assert events["run"]["$ref"].endswith("/RunSummary")
    assert "position" in events["ready"]["required"]
    history = schema["paths"]["/api/v1/runs/{run_id}/events"]["get"]["responses"]["200"]
    assert set(history["content"]) == {"application/json", "text/event-stream"}


def test_every_operation_has_an_example_that_fits_its_schema(
    app_and_schema: tuple[Any, dict[str, Any]],
) -> None:
    _, schema = app_and_schema
    recorded = load_examples()
    routes = {
        (method, route.path): route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    for method, url, op in operations(schema):
        example = recorded.get(op["operationId"])
        assert example is not None, f"no example for {op['operationId']}"
        route = routes[(method, url)]
        if route.body_field is not None:
            for media in op["requestBody"]["content"].values():
                assert media["example"] == example["request"]
            TypeAdapter(route.body_field.field_info.annotation).validate_python(example["request"])
        response = op["responses"][str(example["status"])]
        if route.response_model is not None and "response" in example:
            TypeAdapter(route.response_model).validate_python(example["response"])
        if "response" in example:
            media = next(iter(response["content"].values()))
            assert media["example"] == example["response"]


def test_reference_pages_need_nothing_from_outside(
    app_and_schema: tuple[Any, dict[str, Any]],
) -> None:
    client = TestClient(app_and_schema[0])
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert urls, page
        for url in urls:
            assert url.startswith("/docs/assets/"), (page, url)
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 500, url
        assert "cdn." not in html.text
        assert "fonts.googleapis" not in html.text


def _uuid_values(node: Any, value: Any, components: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, value) of every part of ``value`` that ``node`` declares `format: uuid`."""
    if not isinstance(node, dict) or value is None:
        return []
    if "$ref" in node:
        return _uuid_values(components[node["$ref"].rsplit("/", 1)[1]], value, components)
    found: list[tuple[str, Any]] = []
    if node.get("format") == "uuid":
        found.append(("", value))
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        found += _uuid_values(option, value, components)
    if isinstance(value, dict):
        for name, prop in node.get("properties", {}).items():
            if name in value:
                found += [
                    (f"{name}.{w}", v) for w, v in _uuid_values(prop, value[name], components)
                ]
    if isinstance(value, list):
        for item in value:
            found += _uuid_values(node.get("items"), item, components)
    return found


def test_what_the_schema_calls_a_uuid_is_one_in_every_example(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    recorded = load_examples()
    checked = 0
    for _, _, op in operations(schema):
        example = recorded[op["operationId"]]
        if not isinstance(example.get("response"), dict | list):
            continue
        response = op["responses"][str(example["status"])]
        media = response["content"].get("application/json")
        if media is None:
            continue
        for where, value in _uuid_values(media["schema"], example["response"], components):
            assert isinstance(value, str), (op["operationId"], where, value)
            uuid.UUID(value)  # raises on anything else
            checked += 1
    assert checked > 100  # the examples do hold ids: this checks something
