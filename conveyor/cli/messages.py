"""``conveyor messages``: the emails and pushes send steps delivered, and the outbox (HTTP API)."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.client import (
    AllPages,
    ApiKey,
    Cursor,
    Limit,
    Url,
    connect,
    list_command,
    opt,
    params_of,
)
from conveyor.cli.common import Output, OutputFormat, emit
from conveyor.cli.follow import segment
from conveyor.cli.output import show_fields, to_json

app = typer.Typer(
    help="Sent emails and push notifications, and the outbox (over the HTTP API).",
    no_args_is_help=True,
)

_COLUMNS = ("id", "channel", "status", "recipient", "created_at", "template_name", "run_id")


@app.command("list")
def list_(
    channel: Annotated[
        str | None, opt("--channel", "CONVEYOR_MESSAGE_CHANNEL", "only email or push")
    ] = None,
    status: Annotated[
        str | None, opt("--status", "CONVEYOR_MESSAGE_STATUS", "only sending, sent or failed")
    ] = None,
    run_id: Annotated[
        str | None, opt("--run-id", "CONVEYOR_MESSAGE_RUN_ID", "only this run's messages")
    ] = None,
    contact_id: Annotated[
        str | None, opt("--contact-id", "CONVEYOR_MESSAGE_CONTACT_ID", "only to this contact")
    ] = None,
    template: Annotated[
        str | None,
        opt("--template", "CONVEYOR_MESSAGE_TEMPLATE", "only this template (name or id)"),
    ] = None,
    created_after: Annotated[
        str | None, opt("--created-after", "CONVEYOR_MESSAGE_CREATED_AFTER", "RFC 3339")
    ] = None,
    created_before: Annotated[
        str | None, opt("--created-before", "CONVEYOR_MESSAGE_CREATED_BEFORE", "RFC 3339")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List messages, newest first, without their content (needs runs:read)."""
    params = params_of(
        {
            "channel": channel,
            "status": status,
            "run_id": run_id,
            "contact_id": contact_id,
            "template": template,
            "created_after": created_after,
            "created_before": created_before,
        }
    )
    with connect(url, api_key) as api:
        list_command(
            api,
            "/messages",
            params,
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_COLUMNS,
            noun="messages",
        )


@app.command("show")
def show(
    message_id: Annotated[str, typer.Argument(metavar="MESSAGE_ID", help="the message's id")],
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a message with its rendered content (needs runs:read)."""
    with connect(url, api_key) as api:
        message = api.call("GET", f"/messages/{segment(message_id)}")
    if output is not OutputFormat.TABLE:
        emit(message, output, ())
        return
    show_fields(message, skip=("content",))
    for part, value in (message.get("content") or {}).items():
        if value is not None:
            typer.echo(f"--- {part} ---")
            typer.echo(value if isinstance(value, str) else to_json(value, indent=2))
