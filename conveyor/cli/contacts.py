"""``conveyor contacts``: the people runs are about (over the HTTP API)."""

from __future__ import annotations

from typing import Annotated, Any

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
from conveyor.cli.common import Output, OutputFormat, emit, fail, load_json, read_documents
from conveyor.cli.follow import segment
from conveyor.cli.output import show_fields

app = typer.Typer(help="Contacts (over the HTTP API).", no_args_is_help=True)

_COLUMNS = ("id", "email", "external_id", "attributes", "updated_at")

ContactId = Annotated[str, typer.Argument(metavar="CONTACT_ID", help="the contact's id")]


def parse_attribute(text: str) -> tuple[str, Any]:
    """``name=text`` (a string) or ``name:=json`` (any JSON value), as HTTPie writes them."""
    name, sep, value = text.partition("=")
    if not sep or not name or name == ":":
        raise fail(f"--attribute {text!r}: write NAME=TEXT or NAME:=JSON", 2)
    if not name.endswith(":"):
        return name, value
    try:
        return name[:-1], load_json(value, f"--attribute {name[:-1]} holds what the API refuses")
    except ValueError as exc:
        raise fail(f"--attribute {name[:-1]}: not valid JSON: {exc}", 2) from None


@app.command("list")
def list_(
    email: Annotated[
        str | None, opt("--email", "CONVEYOR_CONTACT_EMAIL", "only this email (any case)")
    ] = None,
    external_id: Annotated[
        str | None, opt("--external-id", "CONVEYOR_CONTACT_EXTERNAL_ID", "only this external id")
    ] = None,
    attribute: Annotated[
        list[str] | None,
        opt(
            "--attribute",
            "CONVEYOR_CONTACT_ATTRIBUTES",
            "NAME:VALUE: only contacts with this attribute value (repeatable)",
        ),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List contacts, newest first (needs contacts:read)."""
    params = params_of({"email": email, "external_id": external_id, "attribute": attribute})
    with connect(url, api_key) as api:
        list_command(
            api,
            "/contacts",
            params,
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_COLUMNS,
            noun="contacts",
        )


@app.command("show")
def show(
    contact_id: ContactId,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a contact (push targets that are URLs are masked; needs contacts:read)."""
    with connect(url, api_key) as api:
        contact = api.call("GET", f"/contacts/{segment(contact_id)}")
    if output is OutputFormat.TABLE:
        show_fields(contact)
    else:
        emit(contact, output, ())


@app.command("upsert")
def upsert(
    email: Annotated[str | None, opt("--email", "CONVEYOR_CONTACT_EMAIL", "the email")] = None,
    external_id: Annotated[
        str | None, opt("--external-id", "CONVEYOR_CONTACT_EXTERNAL_ID", "your id for the person")
    ] = None,
    attribute: Annotated[
        list[str] | None,
        opt(
            "--attribute",
            "CONVEYOR_CONTACT_ATTRIBUTES",
            "NAME=TEXT or NAME:=JSON (repeatable); merged into the contact's attributes",
        ),
    ] = None,
    push_target: Annotated[
        list[str] | None,
        opt(
            "--push-target",
            "CONVEYOR_CONTACT_PUSH_TARGETS",
            "a device token or Apprise URL (repeatable); replaces the list",
        ),
    ] = None,
    file: Annotated[
        str | None,
        opt(
            "--file",
            "CONVEYOR_CONTACT_FILE",
            "the contact as a YAML or JSON object (`-`: stdin); options given win over it",
            short="-f",
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create the contact with this email and/or external id, or update it (contacts:write).

    The external id wins: a contact found by it takes the new email.
    Attributes merge into the stored ones; push targets replace them.
    """
    body: dict[str, Any] = {}
    if file is not None:
        docs = read_documents(file)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise fail(f"{file} must hold one contact object")
        body.update(docs[0])
    if email is not None:
        body["email"] = email
    if external_id is not None:
        body["external_id"] = external_id
    if attribute:
        body["attributes"] = {
            **(body.get("attributes") or {}),
            **dict(map(parse_attribute, attribute)),
        }
    if push_target:
        body["push_targets"] = push_target
    if "email" not in body and "external_id" not in body:
        raise fail("give --email or --external-id (or both)", 2)
    with connect(url, api_key) as api:
        response = api.request("POST", "/contacts", json=body)
    contact = response.json()
    action = "created" if response.status_code == 201 else "updated"
    typer.echo(f"{action} contact {contact['id']}", err=True)
    emit(contact, output, _COLUMNS)


@app.command("delete")
def delete(
    contact_id: ContactId,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a contact: its events stay (without the link), its runs keep its id."""
    with connect(url, api_key) as api:
        api.call("DELETE", f"/contacts/{segment(contact_id)}")
    typer.echo(f"deleted contact {contact_id}", err=True)
