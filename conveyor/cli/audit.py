"""``conveyor audit``: the audit log, for operators."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import DatabaseUrl, Output, OutputFormat, handle_errors, open_db
from conveyor.cli.output import emit_page, page_of
from conveyor.services import audit as service
from conveyor.services.audit import Action
from conveyor.services.tenants import get_tenant_by_name

_COLUMNS = (
    "created_at",
    "action",
    "target_id",
    "key_id",
    "client_address",
    "details",
)


@handle_errors
def audit(
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            "-t",
            envvar="CONVEYOR_TENANT",
            show_envvar=True,
            help="only this tenant's entries [default: every tenant's]",
        ),
    ] = None,
    action: Annotated[
        Action | None,
        typer.Option(
            envvar="CONVEYOR_AUDIT_ACTION", show_envvar=True, help="only entries of this action"
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000,
            envvar="CONVEYOR_AUDIT_LIMIT",
            show_envvar=True,
            help="entries at most",
        ),
    ] = 100,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """The audit log, newest first: API keys created and revoked, channel settings changed."""
    db = open_db(database_url)
    with db.read() as conn:
        tenant_id = get_tenant_by_name(conn, tenant)["id"] if tenant else None
        page = service.list_entries(conn, tenant_id, limit=limit, action=action)
    columns = _COLUMNS if tenant else (*_COLUMNS[:3], "tenant_id", *_COLUMNS[3:])
    shown = {**page_of(page.items, limit), "total": page.total}
    emit_page(shown, output, columns, "entries")
