"""What every command shares: options, settings, output formats, error handling."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from conveyor.domain import jsonsafe
from conveyor.domain.errors import ConveyorError, InvalidDefinition
from conveyor.domain.times import iso
from conveyor.net.http import quiet_library_logs
from conveyor.settings import Settings
from conveyor.store.db import Database

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("conveyor.cli")


class OutputFormat(StrEnum):
    """How a command prints its result."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CONVEYOR_DATABASE_URL",
        show_envvar=True,
        help="SQLAlchemy URL: sqlite:///conveyor.db or postgresql://user@host/db "
        "[default: sqlite:///conveyor.db]",
        show_default=False,
    ),
]
Output = Annotated[
    OutputFormat,
    typer.Option(
        "--output", "-o", envvar="CONVEYOR_OUTPUT", show_envvar=True, help="output format"
    ),
]
TenantName = Annotated[
    str,
    typer.Option("--tenant", "-t", envvar="CONVEYOR_TENANT", show_envvar=True, help="tenant name"),
]


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def open_db(database_url: str | None) -> Database:
    """The database named by the option (or ``CONVEYOR_DATABASE_URL``, or the default)."""
    return Database(build_settings(database_url=database_url).database_url)


def now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    Looking it up late keeps logging working when stderr is swapped (tests).
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str) -> None:
    """Send logs to stderr (stdout is for results), once per process."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_library_logs()  # their request lines carry whole URLs, tokens included


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` to stderr; return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_json(text: str, what: str) -> Any:
    """Parse JSON as the API does: ``ValueError`` if it is not JSON, an exit for a flaw.

    NaN, Infinity, lone surrogates and nesting deeper than 64 levels are refused
    here, before anything is sent or stored, with the place as a JSON pointer.
    """
    try:
        parsed = jsonsafe.loads(text)
    except jsonsafe.TooDeepToParse as exc:
        raise _flawed(exc.flaw, what) from None
    flaw = parsed.flaw()
    if flaw is not None:
        raise _flawed(flaw, what)
    return parsed.value


def check_json(value: Any, what: str) -> None:
    """Exit with a message if ``value`` (parsed JSON or YAML) has what the API refuses."""
    flaw = jsonsafe.find_flaw(value)
    if flaw is not None:
        raise _flawed(flaw, what)


def _flawed(flaw: jsonsafe.Flaw, what: str) -> typer.Exit:
    return fail(f"{what}, at {flaw.pointer or '/'}: {flaw.message}")


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into a message on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InvalidDefinition as exc:
            typer.echo("error: invalid automation definition:", err=True)
            for e in exc.errors:
                where = ".".join(str(p) for p in e["loc"]) or "(root)"
                typer.echo(f"  {where}: {e['msg']}", err=True)
            raise typer.Exit(1) from None
        except ConveyorError as exc:
            raise fail(exc.detail) from None
        except ValidationError as exc:  # settings from options or CONVEYOR_* variables
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise fail(f"invalid configuration: {problems}", 2) from None
        except OperationalError as exc:
            raise fail(f"database error: {exc.orig or exc}") from None

    return wrapper


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, StrEnum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, datetime):
        return str(_plain(value))
    if isinstance(value, Mapping):
        return json.dumps(value, default=_plain)
    return str(value)


def emit(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    output: OutputFormat,
    columns: Iterable[str],
) -> None:
    """Print one object or a list: as an aligned table of ``columns``, JSON, or JSON lines."""
    rows = [data] if isinstance(data, Mapping) else list(data)
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(data, default=_plain, indent=2))
    elif output is OutputFormat.JSONL:
        for row in rows:
            typer.echo(json.dumps(row, default=_plain))
    else:
        cols = list(columns)
        table = [[c.upper() for c in cols]] + [[_cell(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
        for line in table:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
