"""What every command shares: options, settings, output formats, error handling."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import yaml
from pydantic import ValidationError
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError

from conveyor import logs
from conveyor.cli.output import OutputFormat, emit
from conveyor.domain import jsonsafe
from conveyor.domain.errors import ConveyorError, InvalidDefinition
from conveyor.logs import LogFormat
from conveyor.net.http import quiet_library_logs
from conveyor.settings import Settings
from conveyor.store.db import Database

__all__ = ["OutputFormat", "emit"]  # also here, for the commands that import them from here

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("conveyor.cli")


class ExitCode(IntEnum):
    """How a command ends (docs/cli.md lists them)."""

    OK = 0
    ERROR = 1  # the command failed: refused, unreachable, invalid input
    USAGE = 2  # a wrong option or argument, an invalid configuration
    RUN_FAILED = 3  # waited for a run (or a dry run) that failed, exhausted or timed out
    RUN_COMPLETED_WITH_ERRORS = 4
    RUN_CANCELLED = 5
    DIFFERS = 6  # `automations diff`: a file differs from the live automation


# How each terminal status of a run (or a dry run) ends a command that waited for it.
STATUS_EXIT = {
    "completed": ExitCode.OK,
    "completed-with-errors": ExitCode.RUN_COMPLETED_WITH_ERRORS,
    "failed": ExitCode.RUN_FAILED,
    "exhausted": ExitCode.RUN_FAILED,
    "timed-out": ExitCode.RUN_FAILED,
    "cancelled": ExitCode.RUN_CANCELLED,
}


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


_MIGRATE = "run `conveyor migrate` with the same URL"


def open_db(database_url: str | None, settings: Settings | None = None) -> Database:
    """The database of a management command: it must exist and hold Conveyor's schema.

    Named by the option (or ``CONVEYOR_DATABASE_URL``, or the default). It is
    never created here: connecting to a SQLite file that is not there would
    make an empty one, and the command would then fail on a missing table.
    Instead the message names the URL and says to run ``conveyor migrate``.
    """
    settings = settings or build_settings(database_url=database_url)
    url = settings.database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise fail(f"{url!r} is not a database URL", ExitCode.USAGE) from None
    shown = parsed.render_as_string(hide_password=True)
    origin = (
        ""
        if database_url
        else " (the default; --database-url or CONVEYOR_DATABASE_URL name another)"
    )
    if parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if name and name != ":memory:" and not name.startswith("file:"):
            if not Path(name).exists():
                raise fail(
                    f"no database at {shown}{origin}: there is no file {Path(name).resolve()}; "
                    "`conveyor migrate` creates it"
                )
            if Path(name).stat().st_size == 0:  # opening it would write to it
                raise fail(f"the database at {shown}{origin} has no Conveyor schema: {_MIGRATE}")
    db = Database(url)
    try:
        with db.read() as conn:
            migrated = inspect(conn).has_table("tenants")
    except DBAPIError as exc:
        db.dispose()
        raise fail(f"cannot open the database at {shown}{origin}: {exc.orig}") from None
    if not migrated:
        db.dispose()
        raise fail(f"the database at {shown}{origin} has no Conveyor schema: {_MIGRATE}")
    return db


def now() -> datetime:
    """The current time (UTC)."""
    return datetime.now(UTC)


def configure_logging(level: str | None, fmt: LogFormat = "console") -> None:
    """Send logs to stderr (stdout is for results) in ``fmt`` (``conveyor.logs``)."""
    logs.configure(level, fmt)
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


def read_documents(path: str) -> list[Any]:
    """The documents of a YAML or JSON file (``-`` is stdin); YAML may hold several.

    What the API refuses (NaN, infinities, lone surrogates, deep nesting) is
    refused here, before anything is sent or stored.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            return [load_json(text, f"{path} holds what the API refuses")]
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise fail(f"{path} is not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise fail(f"{path} nests too deep to be read") from None
    # YAML has .nan and .inf, and "\ud800" escapes: refused as the API refuses them.
    for number, doc in enumerate(docs, 1):
        where = f"document {number} of {path}" if len(docs) > 1 else path
        check_json(doc, f"{where} holds what the API refuses")
    return docs


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
        except (OperationalError, ProgrammingError) as exc:
            # A table or column missing: the schema is older than this version.
            raise fail(
                f"database error: {exc.orig or exc} (if the schema is out of date, "
                "`conveyor migrate` upgrades it)"
            ) from None

    return wrapper
