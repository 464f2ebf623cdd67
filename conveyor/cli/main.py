"""The ``conveyor`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import FastAPI

from conveyor.cli import (
    audit,
    automations,
    contacts,
    dry_runs,
    events,
    keys,
    messages,
    prune,
    repair,
    runs,
    secrets,
    settings_cmd,
    status,
    templates,
    tenants,
    trigger,
)
from conveyor.cli.client import connect, opt
from conveyor.cli.common import (
    DatabaseUrl,
    ExitCode,
    build_settings,
    configure_logging,
    fail,
    handle_errors,
    now,
)
from conveyor.cli.config import ConfigUnavailable, write_config
from conveyor.domain.egress import DEV_ALLOW
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.gc_tuning import freeze_startup_objects
from conveyor.logs import default_format
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.migrate import upgrade

log = logging.getLogger("conveyor.cli")

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a self-hosted automation engine with a first-class Runs API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(tenants.app, name="tenants")
app.add_typer(keys.app, name="keys")
app.add_typer(automations.app, name="automations")
app.add_typer(runs.app, name="runs")
app.add_typer(events.app, name="events")
app.add_typer(secrets.app, name="secrets")
app.add_typer(dry_runs.app, name="dry-runs")
app.add_typer(templates.app, name="templates")
app.add_typer(contacts.app, name="contacts")
app.add_typer(settings_cmd.app, name="settings")
app.add_typer(messages.app, name="messages")
app.command("trigger")(trigger.trigger)
app.command("audit")(audit.audit)
app.command("repair")(repair.repair)
app.command("prune")(prune.prune)
app.command("status")(status.status)

DEV_TENANT = "dev"

Host = Annotated[
    str | None,
    typer.Option(
        envvar="CONVEYOR_HOST", show_envvar=True, help="address to listen on [default: 127.0.0.1]"
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        envvar="CONVEYOR_PORT", show_envvar=True, help="port to listen on [default: 8000]"
    ),
]


@app.callback()
def _root(
    log_level: Annotated[
        str,
        typer.Option(envvar="CONVEYOR_LOG_LEVEL", show_envvar=True, help="DEBUG, INFO, WARNING..."),
    ] = "INFO",
    log_format: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_LOG_FORMAT",
            show_envvar=True,
            help="json or console [default: console for dev and on a terminal, "
            "json for serve and worker otherwise]",
        ),
    ] = None,
) -> None:
    configure_logging(log_level, default_format("cli", log_format))


def _log_as(command: str, settings: Settings) -> None:
    """Log in ``command``'s format (``conveyor.logs.default_format``); the level stays."""
    configure_logging(None, default_format(command, settings.log_format))


@app.command()
@handle_errors
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade the database schema."""
    settings = build_settings(database_url=database_url)
    db = Database(settings.database_url)
    try:
        upgrade(db)
    finally:
        db.dispose()
    log.info("database schema is up to date (%s)", db.url.render_as_string(hide_password=True))


Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        envvar="CONVEYOR_SERVE_PROCESSES",
        show_envvar=True,
        help="server processes sharing the port (PostgreSQL only) [default: 1]",
    ),
]


@app.command()
@handle_errors
def serve(
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    processes: Processes = None,
) -> None:
    """Serve the HTTP API (no worker: run `conveyor worker` beside it).

    With --processes N (PostgreSQL only), N server processes accept on one
    port; SIGTERM stops them all, and one that dies is started again.
    """
    import uvicorn

    from conveyor.api.app import create_app

    settings = build_settings(
        database_url=database_url, host=host, port=port, serve_processes=processes
    )
    _log_as("serve", settings)
    if settings.serve_processes > 1:
        from conveyor.cli import serving

        refused = serving.refusal(settings)
        if refused is not None:
            raise fail(refused, ExitCode.USAGE)
        code = serving.serve_processes(settings, uvicorn_options(settings))
        if code:
            raise typer.Exit(code)
        return
    api = create_app(settings)
    freeze_startup_objects()
    uvicorn.run(api, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How ``serve`` and ``dev`` run uvicorn.

    uvicorn's own ``X-Forwarded-*`` handling (trusting loopback unless told
    otherwise) is off: the app reads those headers itself, from
    ``CONVEYOR_TRUSTED_PROXIES`` only (``conveyor.api.middleware.ForwardedHeaders``).
    """
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "proxy_headers": False,
        # uvicorn logs through conveyor.logs (one format); the access line is
        # the app's own (conveyor.api.request_log), with the request id and tenant.
        "log_config": None,
        "access_log": False,
    }


async def _serve_worker(db: Database, settings: Settings) -> None:
    from conveyor.engine.worker import Worker

    worker = Worker(db, settings)
    task = asyncio.create_task(worker.serve())
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        # The first signal asks for a graceful stop (in-flight work is finished
        # or released); a second one stops at once.
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stopping: finishing in-flight work (signal again to stop at once)")
            worker.stop()
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(asyncio.CancelledError):
        await task


MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        envvar="CONVEYOR_WORKER_METRICS_PORT",
        show_envvar=True,
        help="serve this worker's Prometheus /metrics on this port [default: none]",
    ),
]
MetricsHost = Annotated[
    str | None,
    typer.Option(
        "--metrics-host",
        envvar="CONVEYOR_WORKER_METRICS_HOST",
        show_envvar=True,
        help="address the worker's /metrics listens on [default: 127.0.0.1]",
    ),
]


@app.command()
@handle_errors
def worker(
    database_url: DatabaseUrl = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = None,
) -> None:
    """Run a worker: execute runs until SIGTERM or SIGINT, then finish or release its work."""
    from conveyor.metrics import server as metrics_server

    settings = build_settings(
        database_url=database_url,
        worker_metrics_port=metrics_port,
        worker_metrics_host=metrics_host,
    )
    _log_as("worker", settings)
    db = settings.service_database()
    exporter = metrics_server.start_for(settings)
    freeze_startup_objects()
    try:
        asyncio.run(_serve_worker(db, settings))
    finally:
        metrics_server.stop(exporter)
        db.dispose()


def ensure_dev_key(db: Database, key_file: Path) -> str:
    """The dev tenant's all-scopes key: the one saved in ``key_file`` if still valid, else new.

    The token is kept in ``key_file`` (mode 0600) so that every start of
    ``conveyor dev`` prints the same key.
    """
    from conveyor.services.keys import authenticate, create_key, revoke_key
    from conveyor.services.tenants import ensure_tenant

    with db.transaction() as conn:
        tenant, _ = ensure_tenant(conn, DEV_TENANT, now=now())
        saved = key_file.read_text(encoding="utf-8").strip() if key_file.exists() else ""
        principal = authenticate(conn, saved, now()) if saved else None
        if principal is not None and principal.tenant_id == tenant["id"]:
            if principal.scopes >= set(ALL_SCOPES):
                return saved
            # Scopes were added since the key was made: replace it.
            revoke_key(conn, tenant["id"], principal.key_id, now=now())
        _, token = create_key(
            conn, tenant_id=tenant["id"], scopes=ALL_SCOPES, label="dev", now=now()
        )
        # Written before the commit: if the file cannot be written, no key is left behind.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(token + "\n")
    return token


def _report_worker_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the in-process worker crashed", exc_info=task.exception())


@asynccontextmanager
async def run_worker_in_app(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan hook: run a worker inside the API process while the app is up."""
    from conveyor.engine.worker import Worker

    worker = Worker(app.state.db, app.state.settings)
    task = asyncio.create_task(worker.serve())
    # Say so at once if the worker dies, not only when the server stops.
    task.add_done_callback(_report_worker_exit)
    try:
        yield
    finally:
        worker.stop()
        await task


def dev_egress(settings: Settings) -> Settings:
    """``conveyor dev``'s egress default: loopback allowed, unless CONVEYOR_EGRESS_ALLOW is set.

    On a laptop the services a developer calls run on it; `serve` and `worker`
    permit nothing private by default. Set (even to empty), the variable
    replaces this default here too.
    """
    if settings.egress_allow is not None:
        return settings
    log.warning(
        "conveyor dev: outbound calls may reach loopback addresses (%s) because "
        "CONVEYOR_EGRESS_ALLOW is not set; `serve` and `worker` allow nothing private",
        DEV_ALLOW,
    )
    return settings.model_copy(update={"egress_allow": DEV_ALLOW})


@app.command()
@handle_errors
def dev(
    host: Host = None,
    port: Port = None,
    database_url: DatabaseUrl = None,
    dev_key_file: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_DEV_KEY_FILE",
            show_envvar=True,
            help="where the dev API key is kept [default: .conveyor-dev-key]",
        ),
    ] = None,
) -> None:
    """Run everything in one process on one database: API and worker, with a dev API key.

    Migrates the database, creates the `dev` tenant and an all-scopes key on first
    start, and prints the URL and the key.
    """
    import uvicorn

    from conveyor.api.app import create_app

    settings = secrets.dev_secret_key(
        dev_egress(
            build_settings(
                database_url=database_url, host=host, port=port, dev_key_file=dev_key_file
            )
        )
    )
    _log_as("dev", settings)
    with Database(settings.database_url) as maintenance:  # migrating runs without timeouts
        upgrade(maintenance)
        token = ensure_dev_key(maintenance, Path(settings.dev_key_file))
    db = settings.service_database()
    url = f"http://{_url_host(settings.host)}:{settings.port}"
    typer.echo(f"Conveyor is running at {url}  (API docs: {url}/docs)")
    typer.echo(f"API key (tenant {DEV_TENANT}): {token}")
    typer.echo(f"Dashboard: {url}/  (sign in with this key)")
    typer.echo(f"  curl -H 'Authorization: Bearer {token}' {url}/api/v1/automations")
    _save_for_the_cli(url, token)
    app_ = create_app(settings, db=db, lifespan_hooks=[run_worker_in_app])
    freeze_startup_objects()
    try:
        uvicorn.run(app_, **uvicorn_options(settings))
    finally:
        db.dispose()


def _save_for_the_cli(url: str, token: str) -> None:
    """Save the dev server's URL and key for the HTTP commands; a failure only warns.

    The server is what `dev` is for: a configuration directory that cannot be
    written (a read-only home in a container) must not stop it.
    """
    try:
        saved = write_config(url, token)
    except (OSError, ConfigUnavailable) as exc:
        log.warning("conveyor dev: could not save the URL and key for the CLI: %s", exc)
        return
    typer.echo(f"The CLI will use this server and key (saved in {saved}):")
    typer.echo("  conveyor automations list")


def _url_host(host: str) -> str:
    """The host to put in a URL: a wildcard address is reached on loopback; IPv6 bracketed."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@app.command()
def login(
    url: Annotated[str, opt("--url", "CONVEYOR_URL", "base URL of the Conveyor server")],
    api_key: Annotated[str, opt("--api-key", "CONVEYOR_API_KEY", "the API key to use")],
) -> None:
    """Check a server URL and an API key, and save them for the HTTP commands.

    They are written to $XDG_CONFIG_HOME/conveyor/config.toml (mode 0600); the
    options of a command, and the CONVEYOR_URL and CONVEYOR_API_KEY variables,
    win over them.
    """
    with connect(url, api_key) as api:
        response = api.send("GET", "/automations", params={"limit": 1})
        if response.status_code != 403:  # a valid key without automations:read is fine
            api.check(response)
        base = api.url
    try:
        path = write_config(base, api_key)
    except ConfigUnavailable as exc:
        raise fail(str(exc), 2) from None
    except OSError as exc:
        raise fail(f"cannot save the configuration: {exc}") from None
    typer.echo(f"saved {base} and the key in {path}")


def main() -> None:
    """Entry point of the ``conveyor`` console script."""
    app()
