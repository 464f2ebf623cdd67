"""``conveyor automations``: apply, diff, list, show and delete automations.

Two ways to reach them: through the HTTP API (``--url``, ``--api-key`` or the
configuration file; the key names the tenant), or, for operators, on the
database directly with ``--tenant`` (and ``--database-url``). ``--tenant``
chooses the database.

``apply`` is idempotent: a document whose definition (once normalised, as the
server stores it) equals the live version is "unchanged" and makes no new
version. Over the API every document is checked by the CLI before any is sent;
on the database all of them are saved in one transaction.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer
import yaml

from conveyor.cli.automation_backends import ApiBackend, Backend, DbBackend
from conveyor.cli.client import AllPages, ApiKey, Cursor, Limit, Url, connect, list_command, opt
from conveyor.cli.common import (
    DatabaseUrl,
    ExitCode,
    Output,
    OutputFormat,
    emit,
    fail,
    handle_errors,
    read_documents,
)
from conveyor.cli.follow import segment
from conveyor.cli.output import emit_page

app = typer.Typer(
    help="Automations: apply files (unchanged ones stay as they are), diff, list, show, delete "
    "(over the HTTP API; on the database with --tenant).",
    no_args_is_help=True,
)

_COLUMNS = ("name", "version", "enabled", "trigger_type", "updated_at", "id")
_VERSION_COLUMNS = ("version", "created_at", "created_by", "id")

Tenant = Annotated[
    str | None,
    opt(
        "--tenant",
        "CONVEYOR_TENANT",
        "work on the database directly, in this tenant (operators) [default: over the API]",
        short="-t",
    ),
]
Ref = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="the automation's id or name")]
File = Annotated[
    str,
    typer.Option(
        "--file",
        "-f",
        envvar="CONVEYOR_AUTOMATION_FILE",
        show_envvar=True,
        help="YAML or JSON definition (`-` for stdin); a YAML file may hold several documents",
    ),
]


@contextmanager
def backend(
    tenant: str | None, database_url: str | None, url: str | None, api_key: str | None
) -> Iterator[Backend]:
    """The database (with ``--tenant``, one transaction) or the API."""
    if tenant:
        with DbBackend.open(tenant, database_url) as db_backend:
            yield db_backend
    else:
        with connect(url, api_key) as api:
            yield ApiBackend(api)


def _ordered_like(value: Any, model: Any) -> Any:
    """``value`` with its keys in ``model``'s order (stored JSON may come back reordered)."""
    if isinstance(value, dict) and isinstance(model, dict):
        keys = [k for k in model if k in value] + [k for k in value if k not in model]
        return {k: _ordered_like(value[k], model.get(k)) for k in keys}
    if isinstance(value, list) and isinstance(model, list):
        return [_ordered_like(v, model[i] if i < len(model) else None) for i, v in enumerate(value)]
    return value


def diff_lines(live: Mapping[str, Any] | None, new: Mapping[str, Any], source: str) -> list[str]:
    """A unified diff of the live automation's definition and ``new``, as YAML."""
    before = ""
    label = "(none)"
    if live is not None:
        before = yaml.safe_dump(_ordered_like(live["definition"], new), sort_keys=False)
        label = f"{live['name']} (live, version {live['version']})"
    after = yaml.safe_dump(dict(new), sort_keys=False)
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), fromfile=label, tofile=source, lineterm=""
        )
    )


def _print_diff(lines: list[str]) -> None:
    colour = sys.stdout.isatty()
    styles = {"+": "green", "-": "red", "@": "cyan"}
    for line in lines:
        style = styles.get(line[:1]) if colour and not line.startswith(("+++", "---")) else None
        typer.echo(typer.style(line, fg=style) if style else line)


def _plan(b: Backend, docs: list[Any]) -> list[tuple[Any, dict[str, Any], dict[str, Any] | None]]:
    """Each document, its normalised definition and its live automation (None: new).

    Every document is checked before anything is saved.
    """
    normalised = b.normalised(docs)
    return [(raw, new, b.current(new["name"])) for raw, new in zip(docs, normalised, strict=True)]


def _say(line: str, output: OutputFormat) -> None:
    typer.echo(line, err=output is not OutputFormat.TABLE)


@app.command("apply")
@handle_errors
def apply(
    file: File,
    dry_run: Annotated[
        bool,
        opt(
            "--dry-run",
            "CONVEYOR_AUTOMATION_DRY_RUN",
            "change nothing: say what would change, with the diff",
        ),
    ] = False,
    tenant: Tenant = None,
    database_url: DatabaseUrl = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create each automation in FILE, or add a version to it if its definition changed.

    An automation whose definition is the same as its live version is left
    alone ("unchanged"): applying a file again makes no new version. If any
    document is invalid, none is saved. Over the API it needs
    automations:read and automations:write.
    """
    docs = read_documents(file)
    if not docs:
        raise fail(f"{file} holds no definition")
    saved: list[dict[str, Any]] = []
    with backend(tenant, database_url, url, api_key) as b:
        for raw, new, live in _plan(b, docs):
            name = new["name"]
            if live is not None and live["definition"] == new:
                _say(
                    f"unchanged automation {name} (version {live['version']}, id {live['id']})",
                    output,
                )
                saved.append(live)
            elif dry_run:
                what = f"version {live['version'] + 1}" if live else "version 1"
                typer.echo(f"would {'update' if live else 'create'} automation {name} ({what})")
                _print_diff(diff_lines(live, new, file))
            else:
                automation = b.save(raw, live)
                action = "updated" if live else "created"
                _say(
                    f"{action} automation {name} "
                    f"(version {automation['version']}, id {automation['id']})",
                    output,
                )
                saved.append(automation)
    if output is not OutputFormat.TABLE and not dry_run:
        emit(saved[0] if len(saved) == 1 else saved, output, ())


@app.command("diff")
@handle_errors
def diff(
    file: File,
    tenant: Tenant = None,
    database_url: DatabaseUrl = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Show how each definition in FILE differs from the live automation.

    Exits 0 when nothing differs and 6 when something does (an automation
    that does not exist yet differs), so a pipeline can tell drift.
    """
    docs = read_documents(file)
    if not docs:
        raise fail(f"{file} holds no definition")
    differs = False
    with backend(tenant, database_url, url, api_key) as b:
        for _, new, live in _plan(b, docs):
            if live is not None and live["definition"] == new:
                typer.echo(f"no changes: automation {new['name']} (version {live['version']})")
                continue
            differs = True
            _print_diff(diff_lines(live, new, file))
    if differs:
        raise typer.Exit(ExitCode.DIFFERS)


@app.command("list")
@handle_errors
def list_(
    tenant: Tenant = None,
    database_url: DatabaseUrl = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List the automations by name, without their definitions (every page)."""
    with backend(tenant, database_url, url, api_key) as b:
        page = b.list_all()
    emit_page(page, output, _COLUMNS, "automations")


@app.command("show")
@handle_errors
def show(
    ref: Ref,
    version: Annotated[
        int | None,
        opt(
            "--version",
            "CONVEYOR_AUTOMATION_VERSION",
            "show this version instead of the current one",
            min=1,
        ),
    ] = None,
    tenant: Tenant = None,
    database_url: DatabaseUrl = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show an automation and its definition (as YAML in table output)."""
    with backend(tenant, database_url, url, api_key) as b:
        automation = b.get(ref, version)
    if output is OutputFormat.TABLE:
        emit(automation, output, _COLUMNS)
        typer.echo("")
        typer.echo(yaml.safe_dump(automation["definition"], sort_keys=False).rstrip())
    else:
        emit(automation, output, ())


@app.command("versions")
def versions(
    ref: Ref,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List an automation's versions, newest first, with their definitions (automations:read).

    Over the HTTP API only. The table shows each version's number, time,
    author and id; `-o json` is the API's page, definitions included.
    """
    with connect(url, api_key) as api:
        list_command(
            api,
            f"/automations/{segment(ref)}/versions",
            [],
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_VERSION_COLUMNS,
            noun="versions",
        )


@app.command("delete")
@handle_errors
def delete(
    ref: Ref,
    tenant: Tenant = None,
    database_url: DatabaseUrl = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete an automation: its runs and versions are kept, its name becomes free."""
    with backend(tenant, database_url, url, api_key) as b:
        b.delete(ref)
    typer.echo(f"deleted automation {ref}", err=True)
