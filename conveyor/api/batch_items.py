"""The request side of batch routes whose items are checked one by one.

``POST /events`` and ``POST /automations/{id}/trigger/batch`` take a list of
items in which one bad item is rejected in its own result while the others go
on; only a flaw outside every item (the batch object, its size) refuses the
whole request (422). This module holds what both do with the raw body: the
list's checks, one item's check against its model, and the OpenAPI body with
its ``$defs`` inlined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from conveyor.api.routing import refusal
from conveyor.domain import jsonsafe

M = TypeVar("M", bound=BaseModel)


def inline_defs(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its local ``$defs`` references replaced by the definitions."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inline_defs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: inline_defs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [inline_defs(v, defs) for v in schema]
    return schema


def body_error(loc: tuple[Any, ...], msg: str, kind: str) -> RequestValidationError:
    """A 422 about the body at ``loc``."""
    return RequestValidationError([{"loc": ("body", *loc), "msg": msg, "type": kind}])


def item_list(
    body: dict[str, Any],
    field: str,
    noun: str,
    max_items: int,
    suspicion: jsonsafe.Suspicion,
) -> list[Any]:
    """The raw items under ``body[field]`` (``noun``: what they are, plural); 422 otherwise."""
    # The batch object's own keys are no item's: a flaw there is the request's.
    flaw = suspicion.find(dict.fromkeys(body))
    if flaw is not None:
        raise refusal(flaw)
    extra = sorted(set(body) - {field})
    if extra:
        raise body_error((extra[0],), f"a batch has only `{field}`", "extra_forbidden")
    if field not in body:
        raise body_error((field,), "Field required", "missing")
    items = body[field]
    if not isinstance(items, list):
        raise body_error((field,), f"must be a list of {noun}", "list_type")
    if len(items) > max_items:
        raise body_error(
            (field,),
            f"a batch holds at most {max_items} {noun} (this one has {len(items)}): split it",
            "too_long",
        )
    return items


@dataclass(frozen=True)
class Refused:
    """Why one item is rejected: its code, a reason to read, and the errors, if any."""

    code: str
    reason: str
    errors: list[dict[str, Any]] | None = None


def check_item(raw: Any, suspicion: jsonsafe.Suspicion, model: type[M], what: str) -> M | Refused:
    """One item checked on its own against ``model`` (``what`` names a whole item in reasons).

    JSON that holds NaN, Infinity or a lone surrogate is ``malformed_json``; JSON nested
    too deep and anything the model refuses, ``validation_error`` with the errors.
    """
    flaw = suspicion.find(raw)
    if flaw is not None:
        reason = f"{flaw.pointer or '/'}: {flaw.message}"
        if flaw.kind is jsonsafe.Kind.TOO_DEEP:
            errors = [{"loc": flaw.loc, "msg": flaw.message, "type": "json_too_deep"}]
            return Refused("validation_error", reason, errors)
        return Refused("malformed_json", reason)
    try:
        return model.model_validate(raw)
    except PydanticValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in errors[:5]
        )
        return Refused("validation_error", reason, errors)
