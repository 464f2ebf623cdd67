"""Request value types as JSON Schema reads them, no looser.

Pydantic's lax mode would take `true` as 1 and `"3"` as 3; JSON Schema (and
so the OpenAPI document) takes neither, but does take `3.0` as an integer.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError


def _number_input(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# An integer: a JSON number with no fraction (`3` or `3.0`), never a boolean or text.
Integer = Annotated[int, BeforeValidator(_number_input)]

# Bounded integers, each spelled with its bounds before the check (pydantic then
# states them in the schema even in an `X | None` field).
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_number_input)]
PositiveInteger = Annotated[int, Field(ge=1), BeforeValidator(_number_input)]
