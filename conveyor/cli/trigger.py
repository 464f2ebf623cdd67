"""``conveyor trigger``: start a run of an automation, and optionally wait for its end."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.client import ApiKey, Url, connect, json_object, opt
from conveyor.cli.common import Output, OutputFormat, emit, fail
from conveyor.cli.follow import (
    RUN_COLUMNS,
    event_line,
    finish,
    follow_run,
    interruptible,
    segment,
    show_run,
)

IDENTITY_TYPES = ("email", "external_id", "contact_id")


def parse_identity(text: str) -> dict[str, str]:
    """``TYPE:VALUE`` (``email:ada@example.com``) as the API's identity object."""
    kind, sep, value = text.partition(":")
    if not sep or kind not in IDENTITY_TYPES or not value:
        raise fail(f"--identity is TYPE:VALUE with TYPE one of {', '.join(IDENTITY_TYPES)}", 2)
    return {"type": kind, "value": value}


def trigger(
    automation: Annotated[
        str, typer.Argument(metavar="AUTOMATION", help="the automation's name or id")
    ],
    payload: Annotated[
        str | None,
        opt(
            "--payload",
            "CONVEYOR_TRIGGER_PAYLOAD",
            "the payload: a JSON object, or @FILE (@-: stdin)",
        ),
    ] = None,
    identity: Annotated[
        str | None,
        opt(
            "--identity",
            "CONVEYOR_TRIGGER_IDENTITY",
            "the contact the run is about: email:ADDRESS, external_id:ID or contact_id:ID",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        opt(
            "--idempotency-key",
            "CONVEYOR_TRIGGER_IDEMPOTENCY_KEY",
            "a repeat with this key returns the first run instead of starting another",
        ),
    ] = None,
    wait: Annotated[
        bool,
        opt(
            "--wait",
            "CONVEYOR_TRIGGER_WAIT",
            "wait for the run to end, print it, and exit with its outcome",
        ),
    ] = False,
    follow: Annotated[
        bool,
        opt(
            "--follow",
            "CONVEYOR_TRIGGER_FOLLOW",
            "print the run's history as it happens, and exit with its outcome",
        ),
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Start a run of AUTOMATION's current version (needs automations:trigger).

    Without --wait or --follow it prints the new run (pending) and exits 0.
    With either (which also need runs:read) the exit code is the run's
    outcome: 0 completed, 3 failed, exhausted or timed out, 4 completed with
    errors, 5 cancelled.
    """
    body: dict[str, Any] = {}
    if payload is not None:
        body["payload"] = json_object(payload, "--payload")
    if identity is not None:
        body["identity"] = parse_identity(identity)
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    with connect(url, api_key) as api:
        response = api.request("POST", f"/automations/{segment(automation)}/trigger", json=body)
        run = response.json()
        if response.headers.get("Idempotent-Replayed") == "true":
            typer.echo(
                f"run {run['id']} was started earlier with this idempotency key: "
                "this is that run, not a new one",
                err=True,
            )
        if not (wait or follow):
            emit(run, output, RUN_COLUMNS)
            return
        with interruptible(run["id"]):
            if follow:
                typer.echo(f"run {run['id']} started; following its history", err=True)
                status = follow_run(api, run["id"], lambda e: typer.echo(event_line(e, output)))
            else:
                status = follow_run(api, run["id"], lambda _: None)
        if not follow:
            show_run(api.call("GET", f"/runs/{segment(run['id'])}"), output)
    finish(run["id"], status)
