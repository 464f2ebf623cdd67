"""The OpenAPI document says what each property, schema and parameter is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor.actions.registry import BUILTIN
from conveyor.store.db import Database
from tests.api.helpers import make_client


def _objects(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema with ``properties`` inside ``node``, with a path saying where it is."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}/{i}")


def _undescribed(document: dict[str, Any]) -> list[str]:
    """``path.property`` for every property, anywhere in ``document``, without a description."""
    return [
        f"{where}.{name}"
        for where, schema in _objects(document, "#")
        for name, prop in schema["properties"].items()
        if not str(prop.get("description") or "").strip()
    ]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document as the server serves it (it reads no table: an empty database will do)."""
    path = tmp_path_factory.mktemp("openapi") / "openapi.db"
    db = Database(f"sqlite:///{path}")
    try:
        response = make_client(db).get("/openapi.json")
    finally:
        db.dispose()
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_every_property_has_a_description(spec: dict[str, Any]) -> None:
    # Components and the schemas written inline (the event ingestion body) alike.
    described = list(_objects(spec, "#"))
    assert len(described) > 50  # the walk finds the schemas
    assert _undescribed(spec) == []


def test_every_component_schema_has_a_description(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    missing = [name for name, schema in schemas.items() if not schema.get("description")]
    assert missing == []


def test_every_parameter_has_a_description(spec: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path} {param['in']}:{param['name']}"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for param in operation.get("parameters", [])
        if not str(param.get("description") or "").strip()
    ]
    assert missing == []


def test_the_walk_finds_a_property_without_a_description() -> None:
    class Bare(BaseModel):
        """A model with one field left undescribed."""

        said: int = 0

    assert _undescribed({"components": {"schemas": {"Bare": Bare.model_json_schema()}}}) == [
        "#/components/schemas/Bare.said"
    ]


@pytest.mark.parametrize("action", BUILTIN, ids=lambda a: a.step_type)
def test_step_settings_are_described(action: Any) -> None:
    # The settings models describe each step type's fields, in the schema as in the docs.
    schema = action.settings_model.model_json_schema(by_alias=True)
    assert schema.get("description"), action.step_type
    assert schema["properties"], action.step_type
    assert _undescribed(schema) == []
    for name, nested in schema.get("$defs", {}).items():
        assert nested.get("description"), (action.step_type, name)
