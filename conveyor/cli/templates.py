"""``conveyor templates``: email and push templates (over the HTTP API)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from conveyor.cli.client import (
    AllPages,
    Api,
    ApiKey,
    Cursor,
    Limit,
    Url,
    connect,
    json_object,
    list_command,
    opt,
    params_of,
)
from conveyor.cli.common import Output, OutputFormat, emit, fail, read_documents
from conveyor.cli.follow import segment
from conveyor.cli.output import show_fields, to_json
from conveyor.domain.templating import TEXT_FIELDS, TemplateRenderError, render_content

app = typer.Typer(help="Email and push templates (over the HTTP API).", no_args_is_help=True)

_COLUMNS = ("name", "channel", "version", "updated_at", "id")
_VERSION_COLUMNS = ("version", "channel", "created_at", "id")
# What the API stores for each channel: every part, null when not given.
_PARTS = {"email": ("subject", "text", "html"), "push": ("title", "body", "data")}

TemplateName = Annotated[str, typer.Argument(metavar="NAME", help="the template's name")]
TemplateFile = Annotated[
    str,
    opt(
        "--file",
        "CONVEYOR_TEMPLATE_FILE",
        "YAML or JSON: `name`, `channel` and the parts (`-` for stdin; YAML may hold several)",
        short="-f",
    ),
]


def _content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A template document's parts as the API stores them (parts not given are null)."""
    parts = {name: doc.get(name) for name in _PARTS.get(str(doc.get("channel")), ())}
    if doc.get("channel") == "push" and parts.get("data") is None:
        parts["data"] = {}
    return parts


def _split(doc: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The name and the request body of one template document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise fail(f"{where}: a template document is an object with a `name`")
    body = {k: v for k, v in doc.items() if k != "name"}
    return doc["name"], body


def _current(api: Api, name: str) -> dict[str, Any] | None:
    response = api.send("GET", f"/templates/{segment(name)}")
    if response.status_code == 404:
        return None
    api.check(response)
    found: dict[str, Any] = response.json()
    return found


@app.command("apply")
def apply(
    file: TemplateFile,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Create each template of FILE, or give it a new version if its content changed.

    A template whose content is the same as its current version's is left as
    it is ("unchanged"): applying a file twice makes no new version. Needs
    templates:write and templates:read.
    """
    docs = read_documents(file)
    if not docs:
        raise fail(f"{file} holds no template")
    split = [_split(doc, f"document {n} of {file}") for n, doc in enumerate(docs, 1)]
    applied: list[dict[str, Any]] = []
    with connect(url, api_key) as api:
        for name, body in split:
            current = _current(api, name)
            if current is not None and (current["channel"], current["content"]) == (
                body.get("channel"),
                _content(body),
            ):
                action, template = "unchanged", current
            else:
                response = api.request("PUT", f"/templates/{segment(name)}", json=body)
                action = "created" if response.status_code == 201 else "updated"
                template = response.json()
            _say(f"{action} template {name} (version {template['version']})", output)
            applied.append(template)
    if output is not OutputFormat.TABLE:
        emit(applied[0] if len(applied) == 1 else applied, output, ())


def _say(line: str, output: OutputFormat) -> None:
    """A line for people: on stdout in a table, on stderr beside JSON."""
    typer.echo(line, err=output is not OutputFormat.TABLE)


@app.command("list")
def list_(
    channel: Annotated[
        str | None, opt("--channel", "CONVEYOR_TEMPLATE_CHANNEL", "only email or push")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List the templates by name, each with its current version (needs templates:read)."""
    with connect(url, api_key) as api:
        list_command(
            api,
            "/templates",
            params_of({"channel": channel}),
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_COLUMNS,
            noun="templates",
        )


@app.command("show")
def show(
    name: TemplateName,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a template and its current content (needs templates:read)."""
    with connect(url, api_key) as api:
        template = api.call("GET", f"/templates/{segment(name)}")
    if output is not OutputFormat.TABLE:
        emit(template, output, ())
        return
    show_fields(template, skip=("content",))
    typer.echo("")
    _print_parts(template["content"])


def _print_parts(parts: Mapping[str, Any]) -> None:
    """Each part under a ``--- name ---`` line (data as JSON); parts not given left out."""
    for part, value in parts.items():
        if value is not None:
            typer.echo(f"--- {part} ---")
            typer.echo(value if isinstance(value, str) else to_json(value, indent=2))


@app.command("versions")
def versions(
    name: TemplateName,
    limit: Limit = 100,
    cursor: Cursor = None,
    all_pages: AllPages = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """List a template's versions, newest first, with their content (needs templates:read).

    The table shows each version's number, channel, time and id; `-o json` is
    the API's page, content included.
    """
    with connect(url, api_key) as api:
        list_command(
            api,
            f"/templates/{segment(name)}/versions",
            [],
            limit=limit,
            cursor=cursor,
            all_pages=all_pages,
            output=output,
            columns=_VERSION_COLUMNS,
            noun="versions",
        )


@app.command("delete")
def delete(
    name: TemplateName,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a template; its versions stay for the messages that name them."""
    with connect(url, api_key) as api:
        api.call("DELETE", f"/templates/{segment(name)}")
    typer.echo(f"deleted template {name}", err=True)


def sample_context() -> dict[str, Any]:
    """What a template sees when previewed: a made-up contact and an empty trigger."""
    now = datetime.now(UTC)
    return {
        "trigger": {
            "id": "preview",
            "name": "preview",
            "payload": {},
            "occurred_at": now.isoformat(),
        },
        "identity": {"type": "email", "value": "ada@example.com"},
        "contact": {
            "id": "00000000-0000-7000-8000-000000000000",
            "email": "ada@example.com",
            "external_id": "ada",
            "push_targets": [],
            "attributes": {"first_name": "Ada"},
        },
        "steps": {},
        "vars": {},
        "run": {"id": "preview", "automation": "preview", "version": 1, "created_at": now},
        "now": now,
    }


def merged(base: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``given`` laid over it, objects merged key by key."""
    out = dict(base)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@app.command("render")
def render(
    name: Annotated[
        str | None,
        typer.Argument(metavar="[NAME]", help="a template on the server (or give -f)"),
    ] = None,
    file: Annotated[
        str | None,
        opt(
            "--file", "CONVEYOR_TEMPLATE_FILE", "preview this template document instead", short="-f"
        ),
    ] = None,
    data: Annotated[
        str | None,
        opt(
            "--data",
            "CONVEYOR_TEMPLATE_DATA",
            "sample data, a JSON object or @FILE, laid over the default sample "
            '(`{"trigger": {"payload": {"order_id": 7}}}`)',
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Preview a template rendered with sample data; nothing is sent.

    The template is NAME's current version on the server, or the document given
    with -f; it is rendered here, with the workers' sandbox and limits, against
    a sample scope (`trigger`, `identity`, `contact`, `steps`, `vars`, `run`,
    `now`) that --data changes. A missing variable is an error naming it.
    """
    if (name is None) == (file is None):
        raise fail("give a template NAME or -f FILE (one of them)", 2)
    if file is not None:
        docs = read_documents(file)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise fail(f"{file} must hold one template document")
        channel, content, label = docs[0].get("channel"), _content(docs[0]), file
    else:
        assert name is not None
        with connect(url, api_key) as api:
            template = api.call("GET", f"/templates/{segment(name)}")
        channel, content = template["channel"], template["content"]
        label = f"{name} (version {template['version']})"
    if channel not in TEXT_FIELDS:
        raise fail(f"{label}: `channel` must be email or push")
    context = merged(sample_context(), json_object(data, "--data") if data else {})
    try:
        rendered = render_content(str(channel), content, context)
    except TemplateRenderError as exc:
        raise fail(f"{label}: {exc.detail}") from None
    if output is OutputFormat.TABLE:
        typer.echo(f"{label}, {channel}, rendered with sample data", err=True)
        _print_parts(rendered)
    else:
        emit(rendered, output, ())
