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
from conveyor.cli.output import show_fields, to_json

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


def _fields(
    file: str | None,
    email: str | None,
    external_id: str | None,
    attribute: list[str] | None,
    push_target: list[str] | None,
) -> dict[str, Any]:
    """The request body: the object of ``file`` (if given), the options given laid over it.

    ``--attribute`` values are added to the file's ``attributes``; the other
    options replace the file's field.
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
    return body


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
    body = _fields(file, email, external_id, attribute, push_target)
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


@app.command("erase")
def erase(
    contact_id: ContactId,
    yes: Annotated[
        bool,
        opt("--yes", "CONVEYOR_ERASE_YES", "erase without asking first", short="-y"),
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Erase a person: cancel their runs, erase their values everywhere, delete the contact.

    `DELETE /contacts/{id}?erase=true` (needs contacts:write and runs:write).
    Their email, external id, identity values and push targets become
    `[erased]` in their runs, steps, history, waits, messages, events, dry-run
    results and the tenant's idempotency records; ids and counts remain. It
    cannot be undone: without --yes it asks first, and anything but yes
    leaves the contact as it is (exit 1).
    """
    if not yes and not typer.confirm(
        f"Erase contact {contact_id}: cancel their unfinished runs and erase their data "
        "everywhere? This cannot be undone",
        default=False,
        err=True,
    ):
        raise fail(f"contact {contact_id} not erased", 1)
    with connect(url, api_key) as api:
        answer = api.call("DELETE", f"/contacts/{segment(contact_id)}", params={"erase": "true"})
    typer.echo(f"erased contact {contact_id}", err=True)
    if output is OutputFormat.TABLE:
        show_fields(
            {
                "runs_cancelled": answer["runs_cancelled"],
                "runs": answer["runs"],
                **{f"redacted.{k}": v for k, v in answer["redacted"].items()},
                **{f"removed.{k}": v for k, v in answer["removed"].items()},
            }
        )
    else:
        emit(answer, output, ())


Email = Annotated[str | None, opt("--email", "CONVEYOR_CONTACT_EMAIL", "the email")]
ExternalId = Annotated[
    str | None, opt("--external-id", "CONVEYOR_CONTACT_EXTERNAL_ID", "your id for the person")
]
ContactFile = Annotated[
    str | None,
    opt(
        "--file",
        "CONVEYOR_CONTACT_FILE",
        "the body as a YAML or JSON object (`-`: stdin); options given win over it",
        short="-f",
    ),
]
# What `contacts patch --clear` may set to null.
CLEARABLE = ("email", "external_id", "push_targets", "attributes")


@app.command("replace")
def replace(
    contact_id: ContactId,
    email: Email = None,
    external_id: ExternalId = None,
    attribute: Annotated[
        list[str] | None,
        opt(
            "--attribute",
            "CONVEYOR_CONTACT_ATTRIBUTES",
            "NAME=TEXT or NAME:=JSON (repeatable); all the attributes it will have",
        ),
    ] = None,
    push_target: Annotated[
        list[str] | None,
        opt(
            "--push-target",
            "CONVEYOR_CONTACT_PUSH_TARGETS",
            "a device token or Apprise URL (repeatable); all it will have",
        ),
    ] = None,
    file: ContactFile = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Replace a contact's fields: those not given are cleared (PUT; contacts:write).

    `contacts replace ID --email a@b.c` leaves the contact with that email and
    no external id, attributes or push targets. To change some fields only,
    use `contacts patch`.
    """
    body = _fields(file, email, external_id, attribute, push_target)
    with connect(url, api_key) as api:
        contact = api.call("PUT", f"/contacts/{segment(contact_id)}", json=body)
    typer.echo(f"replaced contact {contact['id']}", err=True)
    emit(contact, output, _COLUMNS)


@app.command("patch")
def patch(
    contact_id: ContactId,
    email: Email = None,
    external_id: ExternalId = None,
    attribute: Annotated[
        list[str] | None,
        opt(
            "--attribute",
            "CONVEYOR_CONTACT_ATTRIBUTES",
            "NAME=TEXT or NAME:=JSON (repeatable); merged into the attributes "
            "(NAME:=null removes one)",
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
    clear: Annotated[
        list[str] | None,
        opt(
            "--clear",
            "CONVEYOR_CONTACT_CLEAR",
            f"set this field to null (repeatable): {', '.join(CLEARABLE)}",
        ),
    ] = None,
    file: ContactFile = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change some fields of a contact; the others stay (a JSON merge patch; contacts:write).

    Attributes merge key by key into the stored ones; `--clear FIELD` clears
    a field (`--clear attributes` removes them all).
    """
    body = _fields(file, email, external_id, attribute, push_target)
    for field in clear or []:
        if field not in CLEARABLE:
            raise fail(f"--clear {field!r}: one of {', '.join(CLEARABLE)}", 2)
        if body.get(field) is not None:
            raise fail(f"--clear {field} and a value for {field}: give one", 2)
        body[field] = None
    if not body:
        raise fail("nothing to change: give a field, --clear FIELD or -f FILE", 2)
    with connect(url, api_key) as api:
        contact = api.call(
            "PATCH",
            f"/contacts/{segment(contact_id)}",
            content=to_json(body).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    typer.echo(f"patched contact {contact['id']}", err=True)
    emit(contact, output, _COLUMNS)
