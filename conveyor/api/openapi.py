"""The OpenAPI document: FastAPI's, made to say exactly what the server does.

FastAPI builds the paths from the routes; this module then names every
operation (``operations.OPERATIONS``), answers every error as problem+json
(every 422 with its ``errors`` list), describes a step of each registered type
with its own settings (so a plugin's step type appears too), marks the ids
Conveyor generates as UUIDs, gives streams their media type and event shapes,
and attaches an example to every operation. Built once per app, on first use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from conveyor.actions.registry import registry
from conveyor.api import idempotency
from conveyor.api.errors import PROBLEM_JSON, declare_everywhere
from conveyor.api.operations import OPERATIONS
from conveyor.api.streams import EVENT_STREAM
from conveyor.domain.definition import BASE_STEP_FIELDS, AutomationDefinition, StepDef

REF = "#/components/schemas/{model}"
# Path and query parameters holding an id Conveyor generated (a UUID). Automation
# references also take a name, and event ids are the client's own strings.
UUID_PARAMETERS = frozenset(
    {"run_id", "contact_id", "key_id", "dry_run_id", "result_id", "message_id", "operation_id"}
)
# Answers' properties holding ids Conveyor generated are UUIDs too: every `id`,
# `*_id` and `*_ids`, less these, which hold the client's or a provider's strings
# (or, for a trigger source or an audit target, maybe a name).
NOT_UUID_PROPERTIES = frozenset(
    {"external_id", "provider_message_id", "worker_id", "trigger_source_id", "target_id"}
)
NOT_UUID_SCHEMAS = frozenset({"Event", "EventResult", "ResumingEvent", "TriggerEvent"})

# What each stream's events carry: event name (None: any, a history line's
# `type`) and the JSON schema of the event's `data` line.
READY = {
    "type": "object",
    "properties": {
        "position": {
            "type": ["string", "null"],
            "description": "where the stream now is: resume from here with `Last-Event-ID`",
        }
    },
    "required": ["position"],
    "description": "the stream is live: the changes after this position follow",
}
STREAM_EVENTS: dict[str, list[tuple[str | None, dict[str, Any]]]] = {
    "/api/v1/runs/stream": [
        ("run", {"$ref": REF.format(model="RunSummary")}),
        ("ready", READY),
    ],
    "/api/v1/runs/{run_id}/events": [(None, {"$ref": REF.format(model="RunEvent")})],
}
TEMPLATE = "TemplateString"
TEMPLATE_SCHEMA = {
    "title": TEMPLATE,
    "type": "string",
    "pattern": r"\{[{%]",
    "description": (
        "a template (`{{ ... }}` or `{% ... %}`), rendered when the step runs; the "
        "rendered value must then have the setting's type"
    ),
}


def build(app: FastAPI, routers: Sequence[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document of ``routers`` served by ``app`` (cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    # Conveyor's own routes only: the seed adapters have their own documents.
    routes = [route for router in routers for route in router.routes]
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=routes
    )
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    _name_operations(schema)
    _problems(schema, components)
    _definition(components)
    _uuid_parameters(schema)
    _uuid_properties(schema, components)
    _streams(schema)
    idempotency.document(schema)
    declare_everywhere(schema, 503)  # the database can always be unreachable
    declare_everywhere(schema, 429, only_under="/api/")  # every key is rate-limited
    # A body that is not JSON, sent where a client may send one.
    declare_everywhere(schema, 415, only_under="/api/", methods=("post", "put", "patch", "delete"))
    # Any body past CONVEYOR_MAX_BODY_BYTES, before anything else reads it.
    declare_everywhere(schema, 413, only_under="/api/", methods=("post", "put", "patch", "delete"))
    # Signing in takes the key in the body; signing out needs nothing (it clears a cookie).
    for method in ("post", "delete"):
        schema["paths"]["/api/v1/session"][method]["security"] = []
    _examples(schema)
    app.openapi_schema = schema
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), url, operation)
        for url, path in schema.get("paths", {}).items()
        for method, operation in path.items()
    ]


def _name_operations(schema: dict[str, Any]) -> None:
    """Operation ids and summaries from the one table; a route missing from it is a bug."""
    for method, url, operation in _operations(schema):
        named = OPERATIONS.get((method, url))
        if named is None:
            raise LookupError(f"{method} {url} has no entry in conveyor.api.operations")
        operation["operationId"] = named.operation_id
        operation["summary"] = named.summary


def _problems(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """Every error answer is problem+json; every 422 is a ValidationProblem (with `errors`)."""
    validation_problem = {"$ref": REF.format(model="ValidationProblem")}
    for _, _, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            content = response.get("content", {})
            if status[0] in "45" and "application/json" in content:
                content[PROBLEM_JSON] = content.pop("application/json")
            if status == "422":  # FastAPI's own 422 entries name its default body
                response["content"] = {PROBLEM_JSON: {"schema": validation_problem}}
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _definition(components: dict[str, Any]) -> None:
    """The definition schema, its steps a union discriminated by `type` over the registry."""
    definition = AutomationDefinition.model_json_schema(ref_template=REF)
    components.update(definition.pop("$defs", {}))
    components["AutomationDefinition"] = definition
    base = StepDef.model_json_schema(ref_template=REF)
    components.update(base.pop("$defs", {}))
    components[TEMPLATE] = TEMPLATE_SCHEMA
    variants: list[dict[str, str]] = []
    mapping: dict[str, str] = {}
    for step_type, action in sorted(registry().items()):
        name = _step_schema_name(step_type)
        components[name] = _step_schema(step_type, base, action.settings_model, components)
        variants.append({"$ref": REF.format(model=name)})
        mapping[step_type] = REF.format(model=name)
    components["StepDef"] = {
        "title": "StepDef",
        "description": (
            (base.get("description") or "One step.")
            + " Its `type` chooses the settings it takes: one schema per step type."
        ),
        "oneOf": variants,
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }


def _step_schema_name(step_type: str) -> str:
    return "".join(part.capitalize() for part in step_type.split("_")) + "Step"


def _step_schema(
    step_type: str,
    base: dict[str, Any],
    settings_model: type[BaseModel],
    components: dict[str, Any],
) -> dict[str, Any]:
    """One step type: the common fields plus its settings, each also writable as a template."""
    settings = settings_model.model_json_schema(ref_template=REF, by_alias=True)
    components.update(settings.pop("$defs", {}))
    properties = copy.deepcopy(
        {k: v for k, v in base["properties"].items() if k in BASE_STEP_FIELDS}
    )
    properties["type"] = {
        "const": step_type,
        "type": "string",
        "description": f"the step type: `{step_type}`",
    }
    for name, prop in settings.get("properties", {}).items():
        if name in BASE_STEP_FIELDS:
            continue  # the common field of that name wins; the setting is never seen
        description = prop.get("description")
        holds = {k: v for k, v in prop.items() if k not in ("description", "title", "default")}
        field: dict[str, Any] = holds
        if not _takes_any_string(holds):
            template = {"$ref": REF.format(model=TEMPLATE)}
            options = holds.pop("anyOf", None)
            field = {"anyOf": [*options, template]} if options else {"anyOf": [holds, template]}
        if description:
            field["description"] = description
        if "default" in prop:
            field["default"] = prop["default"]
        properties[name] = field
    doc = settings.get("description") or settings_model.__doc__ or ""
    return {
        "title": _step_schema_name(step_type),
        "description": f"A `{step_type}` step. {doc}".strip(),
        "type": "object",
        "properties": properties,
        "required": sorted({"key", "type", *settings.get("required", [])}),
        "additionalProperties": False,
    }


def _takes_any_string(prop: dict[str, Any]) -> bool:
    """True when a template (a string) is already valid for this schema."""
    if not prop or prop.get("anyOf") == [{}]:
        return True
    if prop.get("type") == "string":
        return not ({"format", "enum", "const", "pattern", "maxLength"} & prop.keys())
    return any(_takes_any_string(option) for option in prop.get("anyOf", []))


def _uuid_parameters(schema: dict[str, Any]) -> None:
    for _, _, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") in ("path", "query") and parameter["name"] in UUID_PARAMETERS:
                _set_uuid(parameter["schema"])


def _uuid_properties(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """Mark the generated ids in the answers' schemas (request bodies are left as they are)."""
    for name in _answer_schemas(schema, components):
        if name in NOT_UUID_SCHEMAS:
            continue
        for prop_name, prop in components[name].get("properties", {}).items():
            is_id = prop_name in ("id", "retry_of", "retried_by") or prop_name.endswith(
                ("_id", "_ids")
            )
            if is_id and prop_name not in NOT_UUID_PROPERTIES:
                _set_uuid(prop)


def _answer_schemas(schema: dict[str, Any], components: dict[str, Any]) -> set[str]:
    """Every component schema reachable from a 2xx answer."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    walk(components.get(name))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, _, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            if status.startswith("2"):
                walk(response.get("content"))
    return found


def _set_uuid(prop: dict[str, Any]) -> None:
    if prop.get("type") == "string":
        prop["format"] = "uuid"
    for option in prop.get("anyOf", []):
        _set_uuid(option)
    if prop.get("type") == "array":
        _set_uuid(prop.get("items", {}))


def _streams(schema: dict[str, Any]) -> None:
    """Streams answer `text/event-stream`: the schema describes each event (as OpenAPI 3.2's
    `itemSchema` does), its `data` a JSON document of the event's own schema."""
    for url, events in STREAM_EVENTS.items():
        response = schema["paths"][url]["get"]["responses"]["200"]
        content = response.setdefault("content", {})
        if content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]  # a stream only: no JSON body to describe
        shapes = [_event_schema(name, data) for name, data in events]
        content[EVENT_STREAM] = {
            "schema": {
                "description": (
                    "one server-sent event: an `id` to resume from (`Last-Event-ID`), an "
                    "`event` name and a `data` line of JSON; a comment line every 15 s keeps "
                    "the connection alive"
                ),
                **({"oneOf": shapes} if len(shapes) > 1 else shapes[0]),
            }
        }


def _event_schema(name: str | None, data: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "string", "description": f"the event's name: `{name}`"}
    if name is not None:
        event["const"] = name
    else:
        event["description"] = "the history line's `type` (`run.created`, `step.completed`...)"
    return {
        "type": "object",
        "properties": {
            "event": event,
            "id": {"type": "string", "description": "resume after this event (`Last-Event-ID`)"},
            "data": {
                "type": "string",
                "description": "one line of JSON",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
        "required": ["event", "data"],
    }


def _examples(schema: dict[str, Any]) -> None:
    """An example request and answer for every operation, recorded from a real server."""
    recorded = load_examples()
    for _, _, operation in _operations(schema):
        example = recorded.get(operation["operationId"])
        if example is None:
            continue
        if "request" in example:  # the same fields, whichever media type carries them
            for media in operation.get("requestBody", {}).get("content", {}).values():
                media["example"] = example["request"]
        status = str(example.get("status", ""))
        response = operation.get("responses", {}).get(status)
        if response is None:
            continue
        if "response" in example:
            media = next(iter(response.get("content", {}).values()), None)
            if media is not None:
                media["example"] = example["response"]
        if "parameters" in example:
            for parameter in operation.get("parameters", []):
                if parameter["name"] in example["parameters"]:
                    parameter["example"] = example["parameters"][parameter["name"]]


def load_examples() -> dict[str, Any]:
    """The recorded examples, by operation id (``scripts/openapi_examples.py`` writes them)."""
    source = resources.files("conveyor.api").joinpath("openapi_examples.json")
    if not source.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return loaded
