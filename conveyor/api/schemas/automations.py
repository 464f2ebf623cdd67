"""Automation wire schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, WithJsonSchema

# A stored definition is returned as the JSON it was saved as (normalised from
# an AutomationDefinition when it was saved; older versions keep their shape).
# Its own title keeps client generators from naming it `AutomationDefinition`
# after the field, a name the request schema already has.
StoredDefinition = Annotated[
    dict[str, Any],
    WithJsonSchema({"title": "StoredDefinition", "type": "object", "additionalProperties": True}),
]


class AutomationSummary(BaseModel):
    """An automation as lists show it (without its definition)."""

    id: str
    name: str
    enabled: bool
    trigger_type: str = Field(examples=["event"])
    version: int = Field(description="the current version number (1, 2, ...)")
    version_id: str = Field(description="id of the current version; new runs are pinned to it")
    created_at: datetime
    updated_at: datetime


class Automation(AutomationSummary):
    """An automation with its current definition."""

    description: str | None
    tags: list[str]
    definition: StoredDefinition = Field(
        description="the current definition, normalised (durations in ISO 8601, defaults filled)"
    )


class AutomationVersion(BaseModel):
    """One immutable version of an automation's definition."""

    id: str
    automation_id: str
    version: int
    created_at: datetime
    created_by: str | None = Field(description="who made it: `api_key:<id>` or `cli`")
    definition: StoredDefinition
