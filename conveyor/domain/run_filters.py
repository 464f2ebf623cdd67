"""The run list filters, shared by run lists, live streams and bulk operations."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from conveyor.domain.errors import ConveyorError
from conveyor.domain.status import RunStatus

TRIGGER_TYPES = (
    "manual",
    "event",
    "schedule",
    "automation_failure",
    "retry",
    "automation",
    "dry_run",
)
# Every value a run can carry (`retry` is kept for the clients that filtered on it).
TRIGGER_SOURCE_TYPES = (
    "user",
    "api_key",
    "event",
    "schedule",
    "automation",
    "bulk_operation",
    "dry_run",
    "retry",
)


# The payload filter's bounds: a path of at most 8 keys, each 1-64 of these
# characters (no dots, quotes or brackets, so a path needs no escaping in any
# database's JSON path), and a value of at most 500 characters, no control ones.
PAYLOAD_PREFIX = "payload."
PAYLOAD_MAX_DEPTH = 8
PAYLOAD_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
PAYLOAD_MAX_VALUE = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def check_payload_path(path: str) -> str:
    """``path`` (``order.id``) if it is a valid payload path; ValueError saying why if not."""
    keys = path.split(".")
    if len(keys) > PAYLOAD_MAX_DEPTH:
        raise ValueError(f"a payload path has at most {PAYLOAD_MAX_DEPTH} keys")
    for key in keys:
        if not PAYLOAD_KEY.fullmatch(key):
            raise ValueError(
                "a payload path is keys separated by dots, each 1-64 letters, digits, `_` or `-`"
            )
    return path


def check_payload_value(value: str) -> str:
    """``value`` if it is a valid payload value; ValueError saying why if not."""
    if len(value) > PAYLOAD_MAX_VALUE:
        raise ValueError(f"a payload value has at most {PAYLOAD_MAX_VALUE} characters")
    if _CONTROL.search(value):
        raise ValueError("a payload value holds no control characters")
    return value


class PayloadMatch(BaseModel):
    """``payload.<path>=<value>``: the trigger payload holds ``value`` at ``path``.

    The value matches a JSON string equal to it; and when it is a JSON number,
    ``true``, ``false`` or ``null``, also that JSON value (numbers compared by
    value: ``123`` matches ``123`` and ``123.0``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The schema states the bounds the validators check (with their own messages).
    path: Annotated[str, AfterValidator(check_payload_path)] = Field(
        description="object keys separated by dots (`order.id`); at most 8 keys, each 1-64 "
        "letters, digits, `_` or `-`",
        json_schema_extra={"pattern": r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$"},
    )
    value: Annotated[str, AfterValidator(check_payload_value)] = Field(
        description="the value as text (`123`, `ada`, `true`), at most 500 characters",
        json_schema_extra={"maxLength": PAYLOAD_MAX_VALUE, "pattern": r"^[^\u0000-\u001f\u007f]*$"},
    )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))

    def candidates(self) -> list[Any]:
        """The JSON values that match: the string, and the scalar it spells if any."""
        found: list[Any] = [self.value]
        literal = {"true": True, "false": False, "null": None}
        if self.value in literal:
            found.append(literal[self.value])
        elif _NUMBER.fullmatch(self.value):
            number = json.loads(self.value)
            if math.isfinite(number):
                found.append(number)
        return found


class RunFilters(BaseModel):
    """Which runs a list, a stream or a bulk operation covers. Empty matches all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: tuple[RunStatus, ...] = ()
    automation_id: str | None = None
    automation_name: str | None = None
    trigger_type: str | None = None
    trigger_source_type: str | None = None
    contact_id: str | None = None
    identity: str | None = Field(None, description="the resolved identity's value")
    concurrency_key: str | None = None
    retry_of: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    payload: PayloadMatch | None = None
    dry_run: bool = False


class PayloadFilterNeedsWindow(ConveyorError):
    """On SQLite a payload filter needs a start time: there is no index to find it otherwise."""

    code = "payload_filter_needs_window"


def check_payload_window(filters: RunFilters, dialect: str) -> None:
    """Refuse a payload filter without a start time on SQLite (``PayloadFilterNeedsWindow``).

    PostgreSQL finds payload values through a GIN index; SQLite has none and
    reads the runs of the time window instead, so an unbounded one is refused
    rather than left to read every run the tenant has.
    """
    if dialect == "sqlite" and filters.payload is not None and filters.created_after is None:
        raise PayloadFilterNeedsWindow(
            "on SQLite a payload filter needs a time window: give `created_after` or "
            "`created_at` (on the dashboard, a window or a start time)"
        )
