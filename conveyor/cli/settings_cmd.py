"""``conveyor settings``: how the tenant's emails and push notifications leave (HTTP API)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from conveyor.cli.client import ApiKey, Url, connect, opt
from conveyor.cli.common import Output, OutputFormat, emit, fail, read_documents
from conveyor.cli.output import show_fields

app = typer.Typer(
    help="The tenant's channel settings: email and push (over the HTTP API).",
    no_args_is_help=True,
)

# The fields `set` knows, with how a value is read; write-only ones are never shown.
_KINDS: dict[str, dict[str, str]] = {
    "email": {
        "provider": "text",
        "from": "text",
        "smtp_host": "text",
        "smtp_port": "int",
        "smtp_username": "text",
        "smtp_password": "secret",
        "smtp_starttls": "bool",
    },
    "push": {"provider": "text", "webhook_url": "secret"},
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_FIELDS = ", ".join(f"{c}.{f}" for c, fields in _KINDS.items() for f in fields)


def _print(settings: Mapping[str, Any], output: OutputFormat) -> None:
    """The settings as ``channel.field  value`` lines, or the API's JSON."""
    if output is not OutputFormat.TABLE:
        emit(settings, output, ())
        return
    lines: dict[str, Any] = {}
    for channel in ("email", "push"):
        defaults = set(settings["defaults"][channel])
        for field, value in settings[channel].items():
            shown = "(server default)" if value is None and field in defaults else value
            lines[f"{channel}.{field}"] = shown
    lines["updated_at"] = settings.get("updated_at")
    show_fields(lines)


@app.command("show")
def show(
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show the tenant's own channel settings (needs settings:read).

    Where the server's default is in use the value reads "(server default)"
    (what it is, is the operator's and not shown); the SMTP password and the
    webhook URL are write-only: `*_set` says whether there is one.
    """
    with connect(url, api_key) as api:
        settings = api.call("GET", "/settings/channels")
    _print(settings, output)


def _value(channel: str, field: str, text: str) -> Any:
    kind = _KINDS[channel][field]
    if kind == "int":
        if not text.isdigit():
            raise fail(f"{channel}.{field} must be a number", 2)
        return int(text)
    if kind == "bool":
        if text.lower() not in _TRUE | _FALSE:
            raise fail(f"{channel}.{field} must be true or false", 2)
        return text.lower() in _TRUE
    if kind == "secret" and text == "-":
        return sys.stdin.readline().rstrip("\r\n")  # kept out of the shell's history
    return text


def _field(name: str) -> tuple[str, str]:
    channel, _, field = name.partition(".")
    if field not in _KINDS.get(channel, {}):
        raise fail(f"unknown setting {name!r}; the settings are {_FIELDS}", 2)
    return channel, field


def _kept(current: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What to send back so that nothing changes: the values the tenant set itself.

    Write-only fields are left out, which keeps them (see the API's rules).
    """
    return {
        channel: {
            field: current[channel][field]
            for field, kind in kinds.items()
            if kind != "secret" and current[channel].get(field) is not None
        }
        for channel, kinds in _KINDS.items()
    }


@app.command("set")
def set_(
    assignments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[CHANNEL.FIELD=VALUE]...",
            help=f"settings to change: {_FIELDS}; a secret given as `-` is read from stdin",
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        opt(
            "--unset",
            "CONVEYOR_SETTINGS_UNSET",
            "CHANNEL.FIELD to give back to the server's default (or, a secret, to remove)",
        ),
    ] = None,
    file: Annotated[
        str | None,
        opt(
            "--file",
            "CONVEYOR_SETTINGS_FILE",
            "replace every override with this YAML or JSON body ({email: {...}, push: {...}})",
            short="-f",
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Change some channel settings, keeping the others (needs settings:read and :write).

    `conveyor settings set email.provider=smtp email.smtp_host=mail.example.com`
    reads the current settings, changes those fields and saves the whole. A
    stored SMTP password is dropped by the server when the host, port or
    STARTTLS choice changes, unless a new one is given. With -f, the file's
    body replaces every override, as `PUT /api/v1/settings/channels` does.
    """
    if file is not None and (assignments or unset):
        raise fail("give -f FILE, or the fields to set and unset, not both", 2)
    if file is None and not (assignments or unset):
        raise fail("give CHANNEL.FIELD=VALUE, --unset CHANNEL.FIELD, or -f FILE", 2)
    changes: list[tuple[str, str, Any]] = []
    for assignment in assignments or []:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise fail(f"{assignment!r}: write CHANNEL.FIELD=VALUE", 2)
        channel, field = _field(name)
        changes.append((channel, field, _value(channel, field, text)))
    changes += [(*_field(name), None) for name in unset or []]
    with connect(url, api_key) as api:
        if file is not None:
            docs = read_documents(file)
            if len(docs) != 1 or not isinstance(docs[0], dict):
                raise fail(f"{file} must hold one settings object")
            body: dict[str, Any] = docs[0]
        else:
            body = _kept(api.call("GET", "/settings/channels"))
            for channel, field, value in changes:
                body[channel][field] = value
        settings = api.call("PUT", "/settings/channels", json=body)
    _print(settings, output)
