"""``conveyor automations``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from conveyor.cli.common import (
    DatabaseUrl,
    Output,
    OutputFormat,
    TenantName,
    build_settings,
    check_json,
    emit,
    fail,
    handle_errors,
    load_json,
    now,
    open_db,
)
from conveyor.services import automations as service
from conveyor.services.tenants import get_tenant_by_name
from conveyor.store.db import Database

app = typer.Typer(help="Manage automations.", no_args_is_help=True)

_COLUMNS = ("id", "name", "version", "enabled", "trigger_type", "updated_at")


def _read_definitions(path: str) -> list[Any]:
    """The definitions in a YAML or JSON file (``-`` is stdin); YAML may hold several."""
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


@app.command("apply")
@handle_errors
def apply(
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            envvar="CONVEYOR_AUTOMATION_FILE",
            show_envvar=True,
            help="YAML or JSON definition (`-` for stdin); a YAML file may hold several documents",
        ),
    ],
    tenant: TenantName,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create each automation in FILE, or add a new version to it if it exists.

    All documents are applied in one transaction: if one is invalid, none is saved.
    """
    definitions = _read_definitions(file)
    if not definitions:
        raise fail(f"{file} holds no definition")
    settings = build_settings(database_url=database_url)
    db = Database(settings.database_url)
    egress = settings.egress_policy()  # CONVEYOR_EGRESS_ALLOW / _DENY, as the workers see them
    results = []
    with db.transaction() as conn:
        tenant_id = get_tenant_by_name(conn, tenant)["id"]
        for raw in definitions:
            automation, created = service.apply_automation(
                conn, tenant_id, raw, now=now(), created_by="cli", egress=egress
            )
            results.append({**automation, "action": "created" if created else "updated"})
    if output is OutputFormat.TABLE:
        for r in results:
            typer.echo(
                f"{r['action']} automation {r['name']} (version {r['version']}, id {r['id']})"
            )
    else:
        emit(results[0] if len(results) == 1 else results, output, ())


@app.command("list")
@handle_errors
def list_(
    tenant: TenantName,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List a tenant's automations."""
    db = open_db(database_url)
    with db.read() as conn:
        tenant_id = get_tenant_by_name(conn, tenant)["id"]
        page = service.list_automations(conn, tenant_id, limit=100_000)
    emit(page.items, output, _COLUMNS)


@app.command("show")
@handle_errors
def show(
    ref: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="the automation's id or name")],
    tenant: TenantName,
    version: Annotated[
        int | None,
        typer.Option(
            envvar="CONVEYOR_AUTOMATION_VERSION",
            show_envvar=True,
            min=1,
            help="show this version instead of the current one",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show an automation and its definition (as YAML in table output)."""
    db = open_db(database_url)
    with db.read() as conn:
        tenant_id = get_tenant_by_name(conn, tenant)["id"]
        automation = service.get_automation(conn, tenant_id, ref)
        if version is not None:
            old = service.get_version(conn, tenant_id, ref, version)
            automation = {
                **automation,
                "version": old["version"],
                "version_id": old["id"],
                "description": old["definition"].get("description"),
                "tags": old["definition"].get("tags", []),
                "definition": old["definition"],
            }
    if output is OutputFormat.TABLE:
        emit(automation, output, _COLUMNS)
        typer.echo("")
        typer.echo(yaml.safe_dump(automation["definition"], sort_keys=False).rstrip())
    else:
        emit(automation, output, ())
