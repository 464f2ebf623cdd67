"""``conveyor tenants``."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import (
    DatabaseUrl,
    Output,
    OutputFormat,
    emit,
    fail,
    handle_errors,
    now,
    open_db,
)
from conveyor.cli.output import emit_page, page_of
from conveyor.domain.senders import SenderDomains
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
    emit_page(page_of(tenants, len(tenants)), output, _COLUMNS, "tenants")


@app.command("set-from-domains")
@handle_errors
def set_from_domains(
    name: Annotated[str, typer.Argument(help="tenant name")],
    domains: Annotated[
        str | None,
        typer.Argument(
            help='comma-separated domains (`*.example.com` for names under it); "" allows none'
        ),
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="use CONVEYOR_EMAIL_FROM_DOMAINS again")
    ] = False,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Set the domains a tenant may send from through the server's SMTP relay.

    Replaces CONVEYOR_EMAIL_FROM_DOMAINS for this tenant. The tenant's own
    SMTP server is not concerned; CONVEYOR_EMAIL_FROM is always allowed.
    """
    if default == (domains is not None):
        raise fail("give the domains, or --default (not both)")
    try:
        parsed = None if default else SenderDomains.parse(domains)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with open_db(database_url) as db, db.transaction() as conn:
        tenant = service.set_from_domains(conn, name, parsed, now=now())
    if output is OutputFormat.TABLE:
        shown = tenant["email_from_domains"]
        tenant["email_from_domains"] = (
            "(CONVEYOR_EMAIL_FROM_DOMAINS)" if shown is None else ",".join(shown) or "(none)"
        )
    emit(tenant, output, (*_COLUMNS, "email_from_domains"))
