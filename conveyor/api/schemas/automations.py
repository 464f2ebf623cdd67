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

    id: str = Field(description="the automation's id (a UUID); URLs also take its name")
    name: str = Field(
        description="unique among the tenant's live automations: a slug (lowercase letters, "
        "digits, `-` and `_`), at most 100 characters"
    )
    enabled: bool = Field(description="false: the automation cannot be triggered")
    trigger_type: str = Field(
        description="what starts its runs: `manual`, `event`, `schedule` or `automation_failure`",
        examples=["event"],
    )
    version: int = Field(description="the current version number (1, 2, ...)")
    version_id: str = Field(description="id of the current version; new runs are pinned to it")
    created_at: datetime = Field(description="when the automation was created (RFC 3339, UTC)")
    updated_at: datetime = Field(description="when its last version was made (RFC 3339, UTC)")


class Automation(AutomationSummary):
    """An automation with its current definition."""

    description: str | None = Field(description="the current definition's `description`")
    tags: list[str] = Field(description="the current definition's `tags`")
    definition: StoredDefinition = Field(
        description="the current definition, normalised (durations in ISO 8601, defaults filled)"
    )


class AutomationVersion(BaseModel):
    """One immutable version of an automation's definition."""

    id: str = Field(
        description="the version's id (a UUID): what a run's `automation_version_id` names"
    )
    automation_id: str = Field(description="the automation it is a version of")
    version: int = Field(description="its number: 1 for the first, then 2, 3, ...")
    created_at: datetime = Field(description="when it was made (RFC 3339, UTC)")
    created_by: str | None = Field(description="who made it: `api_key:<id>` or `cli`")
    definition: StoredDefinition = Field(
        description="the definition, normalised as stored (durations in ISO 8601, defaults filled)"
    )
