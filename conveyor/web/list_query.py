"""The runs list's filters as the page's GET form sends them, and back into links.

Every filter lives in the URL, so a filtered list is shareable and the back
button works. Bad values are not guessed at: the page says what is wrong
(400) and shows the form again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from conveyor.domain.run_filters import (
    PAYLOAD_PREFIX,
    TRIGGER_TYPES,
    PayloadMatch,
    RunFilters,
    check_payload_path,
    check_payload_value,
)
from conveyor.domain.status import RunStatus

# The time windows the form offers, newest runs back to this far.
WINDOWS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
TEXT_FIELDS = ("automation", "identity", "tag")
# Every parameter the page reads; the filter ones are kept in pagination links.
FILTER_PARAMS = (
    "status",
    "automation",
    "trigger_type",
    "window",
    "from",
    "to",
    *TEXT_FIELDS[1:],
    "payload",
)
MAX_TRAIL = 20  # cursors kept for "previous": deep enough, and the URL stays short


@dataclass
class ListQuery:
    """What the runs list was asked for: filters, page position, and any problems."""

    values: dict[str, Any] = field(default_factory=lambda: {"status": []})
    filters: RunFilters = field(default_factory=RunFilters)
    cursor: str | None = None
    trail: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def link(self, **changes: Any) -> str:
        """The query string of this list with ``changes`` (a value of None drops it)."""
        params: list[tuple[str, str]] = []
        merged = {**{k: self.values.get(k) for k in FILTER_PARAMS}, **changes}
        for name, value in merged.items():
            if value is None or value == "" or value == []:
                continue
            for v in value if isinstance(value, list) else [value]:
                params.append((name, str(v)))
        return urlencode(params)

    def next_link(self, next_cursor: str) -> str:
        """The next page: its cursor, and this one's kept for going back."""
        trail = [*self.trail, self.cursor or ""][-MAX_TRAIL:]
        return self.link(cursor=next_cursor, trail=",".join(trail))

    def prev_link(self) -> str | None:
        """The previous page, or None on the first page."""
        if self.cursor is None:
            return None
        *rest, last = self.trail or [""]
        return self.link(cursor=last or None, trail=",".join(rest) or None)


def api_query(filters: RunFilters) -> str:
    """The filters as the API's run list and run stream take them (a query string)."""
    values = filters.model_dump(mode="json", exclude_defaults=True, exclude={"dry_run", "payload"})
    if filters.payload is not None:  # the API's parameter name carries the path
        values[f"payload.{filters.payload.path}"] = filters.payload.value
    return urlencode(values, doseq=True)


def _time(name: str, raw: str, errors: list[str]) -> datetime | None:
    """A time from the form: RFC 3339, or a ``datetime-local`` value taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        errors.append(f"{name}: not a time (use 2026-06-01T09:00, in UTC)")
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time_window(q: ListQuery, one: Mapping[str, str], crit: dict[str, Any], now: datetime) -> None:
    """The ``window``, ``from`` and ``to`` fields into ``crit``'s creation-time bounds."""
    window = one.get("window", "")
    if window and window not in WINDOWS:
        q.errors.append(f"window: one of {', '.join(WINDOWS)}")
    elif window:
        q.values["window"] = window
        crit["created_after"] = now - WINDOWS[window]
    for name, key in (("from", "created_after"), ("to", "created_before")):
        raw = one.get(name, "")
        moment = _time(name, raw, q.errors) if raw else None
        if moment is not None:
            q.values[name] = raw
            # An explicit start narrows a window, never widens it.
            if key not in crit or moment > crit[key]:
                crit[key] = moment


def _payload(raw: str, errors: list[str]) -> PayloadMatch | None:
    """The payload field, ``order.id=123`` (``payload.order.id=123`` too), checked."""
    path, equals, value = raw.partition("=")
    path = path.strip().removeprefix(PAYLOAD_PREFIX)
    if not equals:
        errors.append("payload: write it as path=value, e.g. order.id=123")
        return None
    value = value.strip()
    try:
        return PayloadMatch(path=check_payload_path(path), value=check_payload_value(value))
    except ValueError as exc:
        errors.append(f"payload: {exc}")
        return None


def parse(params: Mapping[str, list[str]], now: datetime) -> ListQuery:
    """The list query in a page's query parameters (``{name: [values]}``)."""
    q = ListQuery()
    errors = q.errors
    if any("\x00" in v for values in params.values() for v in values):
        # PostgreSQL cannot hold U+0000 in text: refused here, as the API refuses it.
        errors.append("a filter holds the character U+0000")
        return q
    one = {name: (values[-1].strip() if values else "") for name, values in params.items()}
    statuses = [s for s in params.get("status", []) if s]
    known = {str(s) for s in RunStatus}
    for s in statuses:
        if s not in known:
            errors.append(f"status: unknown status {s!r}")
    q.values["status"] = [s for s in statuses if s in known]
    crit: dict[str, Any] = {"status": tuple(RunStatus(s) for s in q.values["status"])}
    for name in TEXT_FIELDS:
        value = one.get(name, "")
        if len(value) > 500:
            errors.append(f"{name}: at most 500 characters")
        elif value:
            q.values[name] = value
            crit["automation_name" if name == "automation" else name] = value
    trigger = one.get("trigger_type", "")
    if trigger and trigger not in TRIGGER_TYPES:
        errors.append(f"trigger_type: one of {', '.join(TRIGGER_TYPES)}")
    elif trigger:
        q.values["trigger_type"] = crit["trigger_type"] = trigger
    _time_window(q, one, crit, now)
    payload = one.get("payload", "")
    if payload:
        if len(payload) > 1100:
            errors.append("payload: at most 1,100 characters")
        else:
            q.values["payload"] = payload
            crit["payload"] = _payload(payload, errors)
    q.filters = RunFilters(**crit)
    q.cursor = one.get("cursor") or None
    trail = one.get("trail", "")
    q.trail = trail.split(",")[-MAX_TRAIL:] if trail else []
    return q
