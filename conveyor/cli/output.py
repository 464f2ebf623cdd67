"""How commands print: tables that fit the terminal, JSON as the API writes it, JSON lines.

``-o json`` prints what the API answers, unchanged: a list command the page
object, a single object the object. ``-o jsonl`` prints one item per line.
Tables are for people: they fit the terminal (80 columns when the output is
not one), long cells are cut with ``…`` and, if that is not enough, the last
columns are left out. Ids are never cut: a cut id cannot be pasted back.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import typer

from conveyor.domain.times import iso

DEFAULT_WIDTH = 80
_GAP = 2
_MIN_CELL = 8
# Shorter column titles, so that more columns fit.
HEADERS = {
    "automation_name": "automation",
    "trigger_type": "trigger",
    "duration_seconds": "seconds",
    "created_at": "created",
    "updated_at": "updated",
    "expires_at": "expires",
    "revoked_at": "revoked",
    "last_used_at": "last_used",
    "attempt_count": "attempts",
    "branch_taken": "branch",
}
_ELLIPSIS = "…"
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$")


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, StrEnum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON text (datetimes as RFC 3339 in UTC, as the API writes them)."""
    return json.dumps(value, default=_plain, indent=indent, ensure_ascii=False)


def terminal_width() -> int:
    """``COLUMNS`` if set, else the terminal's width, else 80 (output to a file or a pipe)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_WIDTH


def cell(value: Any) -> str:
    """One value as table text, on one line (None is ``-``)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = ",".join(cell(v) for v in value) if value else "-"
    elif isinstance(value, datetime):
        text = str(_plain(value))
    elif isinstance(value, Mapping):
        text = to_json(value)
    else:
        text = str(value)
    return " ".join(text.split()) if any(c in text for c in "\n\r\t") else text


def _cuttable(column: str) -> bool:
    """Whether a column's cells may be cut: not ids (to paste back), times, or counts."""
    return not (
        column == "id"
        or column.endswith(("_id", "_at"))
        or column in ("version", "seq", "status", "enabled")
    )


def fit(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """Lines of an aligned table no wider than ``width`` (when it can be done).

    Columns are in order of importance. As many as fit are shown, each at least
    as wide as its title (text columns: 8 characters, or less if shorter);
    then the widest text column is cut, one character at a time, until the
    table fits.
    """
    header = [HEADERS.get(c, c).upper() for c in columns]
    table = [header, *[list(r) for r in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    floor = [
        min(widths[i], max(len(header[i]), _MIN_CELL)) if _cuttable(columns[i]) else widths[i]
        for i in range(len(header))
    ]
    shown, used = 0, -_GAP
    while shown < len(header) and (shown == 0 or used + _GAP + floor[shown] <= width):
        used += _GAP + floor[shown]
        shown += 1
    excess = sum(widths[:shown]) + _GAP * (shown - 1) - width
    while excess > 0:
        cuttable = [i for i in range(shown) if widths[i] > floor[i]]
        if not cuttable:
            break
        widest = max(cuttable, key=lambda i: widths[i])
        step = min(excess, widths[widest] - floor[widest])
        widths[widest] -= step
        excess -= step
    lines = []
    for line in table:
        cells = [fit_text(line[i], widths[i]).ljust(widths[i]) for i in range(shown)]
        lines.append((" " * _GAP).join(cells).rstrip())
    return lines


def fit_text(text: str, width: int) -> str:
    """``text``, cut with an ellipsis to ``width`` characters if longer."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


def table_cell(column: str, value: Any) -> str:
    """``cell``, with times shown in UTC to the second."""
    text = cell(value)
    # Times in UTC to the second in tables (JSON has them whole).
    if column.endswith("_at") and _TIME.match(text):
        return _TIME.sub(r"\1 \2", text)
    return text


def print_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[str]) -> None:
    """``rows`` as a table of ``columns`` that fits the terminal."""
    cols = list(columns)
    body = [[table_cell(c, r.get(c)) for c in cols] for r in rows]
    for line in fit(cols, body, terminal_width()):
        typer.echo(line)


def emit(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    output: OutputFormat,
    columns: Iterable[str],
) -> None:
    """Print one object or a list: JSON, JSON lines, or for people ``columns`` of it.

    A list is a table; one object is a ``name  value`` line per column (which
    fits any terminal, where a one-row table would lose columns).
    """
    rows = [data] if isinstance(data, Mapping) else list(data)
    if output is OutputFormat.JSON:
        typer.echo(to_json(data, indent=2))
    elif output is OutputFormat.JSONL:
        for row in rows:
            typer.echo(to_json(row))
    elif isinstance(data, Mapping):
        show_fields({c: data.get(c) for c in columns})
    else:
        print_table(rows, columns)


def page_of(items: Sequence[Mapping[str, Any]], limit: int) -> dict[str, Any]:
    """A list read from the database, in the API's page shape (one page holds it all)."""
    return {
        "items": list(items),
        "total": len(items),
        "limit": limit,
        "offset": 0,
        "next_cursor": None,
    }


def emit_page(
    page: Mapping[str, Any], output: OutputFormat, columns: Iterable[str], noun: str
) -> None:
    """Print a page: JSON as is, its items as lines, or a table and a count on stderr."""
    items = page["items"]
    if output is OutputFormat.JSON:
        typer.echo(to_json(page, indent=2))
    elif output is OutputFormat.JSONL:
        for item in items:
            typer.echo(to_json(item))
    else:
        print_table(items, columns)
        total = f"{page['total']:,}{'' if page.get('total_exact', True) else '+'}"
        cursor = page.get("next_cursor")
        more = f"; next page: --cursor {cursor}" if cursor else ""
        typer.echo(f"{len(items)} of {total} {noun}{more}", err=True)


def show_fields(obj: Mapping[str, Any], skip: Iterable[str] = ()) -> None:
    """An object as ``name  value`` lines, nested values as JSON (whole: nothing is cut)."""
    skipped = set(skip)
    keys = [k for k in obj if k not in skipped]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        typer.echo(f"{key.ljust(width)}{' ' * _GAP}{cell(obj[key])}")
