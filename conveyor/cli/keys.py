"""``conveyor keys``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from conveyor.cli.common import (
    DatabaseUrl,
    Output,
    OutputFormat,
    TenantName,
    emit,
    fail,
    handle_errors,
    now,
    open_db,
)
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as service
from conveyor.services.audit import Actor
from conveyor.services.tenants import get_tenant_by_name

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

_COLUMNS = (
    "id",
    "label",
    "prefix",
    "scopes",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
)


@app.command("create")
@handle_errors
def create(
    tenant: TenantName,
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            "-s",
            envvar="CONVEYOR_KEY_SCOPES",
            show_envvar=True,
            help=f"scope to grant (repeat for more): {', '.join(ALL_SCOPES)}, or `all`",
        ),
    ],
    label: Annotated[
        str,
        typer.Option(envvar="CONVEYOR_KEY_LABEL", show_envvar=True, help="a name for people"),
    ] = "",
    expires_at: Annotated[
        datetime | None,
        typer.Option(
            envvar="CONVEYOR_KEY_EXPIRES_AT",
            show_envvar=True,
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"],
            help="when the key stops working: 2027-01-31 (midnight UTC) "
            "or 2027-01-31T12:00:00+00:00",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create an API key and print its token, once: it is not stored and cannot be shown again.

    The creation is written to the audit log as an operator's.
    """
    scopes = list(ALL_SCOPES) if scope == ["all"] else scope
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    db = open_db(database_url)
    with db.transaction() as conn:
        tenant_row = get_tenant_by_name(conn, tenant)
        try:
            key, token = service.create_key(
                conn,
                tenant_id=tenant_row["id"],
                scopes=scopes,
                label=label,
                now=now(),
                expires_at=expires_at,
                actor=Actor.operator(tenant_row["id"]),
            )
        except ValueError as exc:
            raise fail(f"--expires-at {exc}", 2) from None
    if output is OutputFormat.TABLE:
        emit(key, output, _COLUMNS)
        typer.echo(f"\ntoken: {token}")
        typer.echo("Store the token now: it is not shown again.", err=True)
    else:
        emit({**key, "token": token}, output, ())


@app.command("list")
@handle_errors
def list_(
    tenant: TenantName,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List a tenant's API keys (tokens are never shown again)."""
    db = open_db(database_url)
    with db.read() as conn:
        tenant_row = get_tenant_by_name(conn, tenant)
        page = service.list_keys(conn, tenant_row["id"], limit=100_000)
    emit(page.items, output, _COLUMNS)


@app.command("revoke")
@handle_errors
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id")],
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Revoke an API key: it stops working at once (written to the audit log)."""
    db = open_db(database_url)
    with db.transaction() as conn:
        key = service.revoke_key_any_tenant(conn, key_id, now=now())
    emit(key, output, _COLUMNS)
