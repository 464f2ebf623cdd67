"""``conveyor keys``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError

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
from conveyor.cli.output import emit_page, page_of
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as service
from conveyor.services.audit import Actor
from conveyor.services.tenants import get_tenant_by_name

app = typer.Typer(help="Manage API keys (on the database: for operators).", no_args_is_help=True)

_SHORT = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_lifetime(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, or an ISO 8601 duration (``P90D``, ``PT12H``)."""
    short = _SHORT.match(text.strip())
    if short:
        lifetime = timedelta(**{_UNITS[short[2]]: int(short[1])})
    else:
        try:
            lifetime = TypeAdapter(timedelta).validate_python(text.strip())
        except ValidationError:
            raise fail(f"--expires {text!r}: write 90d, 12h, 30m, 2w, or P90D", 2) from None
    if lifetime <= timedelta(0):
        raise fail("--expires must be a positive duration", 2)
    return lifetime


_COLUMNS = (
    "id",
    "label",
    "prefix",
    "expires_at",
    "revoked_at",
    "scopes",
    "last_used_at",
    "created_at",
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
    expires: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_KEY_EXPIRES",
            show_envvar=True,
            help="how long the key works from now: 90d, 12h, 30m, 2w, or ISO 8601 (P90D)",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create an API key and print its token, once: it is not stored and cannot be shown again.

    The creation is written to the audit log as an operator's.
    """
    scopes = list(ALL_SCOPES) if scope == ["all"] else scope
    if expires is not None:
        if expires_at is not None:
            raise fail("give --expires or --expires-at, not both", 2)
        expires_at = now() + parse_lifetime(expires)
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
    emit_page(page_of(page.items, 100_000), output, _COLUMNS, "keys")


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
