"""``conveyor tenants``."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import DatabaseUrl, Output, OutputFormat, emit, handle_errors, now, open_db
from conveyor.services import tenants as service

app = typer.Typer(help="Manage tenants (isolation boundaries).", no_args_is_help=True)

_COLUMNS = ("id", "name", "created_at")


@app.command("create")
@handle_errors
def create(
    name: Annotated[str, typer.Argument(help="tenant name (a lowercase slug)")],
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create a tenant."""
    db = open_db(database_url)
    with db.transaction() as conn:
        tenant = service.create_tenant(conn, name, now=now())
    emit(tenant, output, _COLUMNS)


@app.command("list")
@handle_errors
def list_(database_url: DatabaseUrl = None, output: Output = OutputFormat.TABLE) -> None:
    """List tenants."""
    db = open_db(database_url)
    with db.read() as conn:
        tenants = service.list_tenants(conn)
    emit(tenants, output, _COLUMNS)
