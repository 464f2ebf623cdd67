"""``conveyor status``: workers, queue and last prune, for operators (every tenant, on the DB)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import typer

from conveyor.cli.common import (
    DatabaseUrl,
    Output,
    OutputFormat,
    build_settings,
    handle_errors,
    now,
    open_db,
)
from conveyor.cli.output import print_table, to_json
from conveyor.services.status import engine_status

_WORKER_COLUMNS = ("name", "state", "host", "pid", "slots_busy", "slots_total", "last_seen_at")
_QUEUE_COLUMNS = ("kind", "due", "oldest_due_age_seconds", "leased", "later", "total")


@handle_errors
def status(database_url: DatabaseUrl = None, output: Output = OutputFormat.TABLE) -> None:
    """Show workers alive (and recently dead) and the queue by task kind, over every tenant.

    A worker is dead when its heartbeat is older than CONVEYOR_WORKER_DEAD_SECONDS.
    `due` counts tasks a worker could claim now; `oldest_due_age_seconds` is
    how long the oldest of them has waited.
    """
    settings = build_settings(database_url=database_url)
    db = open_db(database_url, settings)
    try:
        with db.read() as conn:
            report = engine_status(conn, now(), timedelta(seconds=settings.worker_dead_seconds))
    finally:
        db.dispose()
    if output is not OutputFormat.TABLE:
        typer.echo(to_json(report, indent=2 if output is OutputFormat.JSON else None))
        return
    typer.echo(
        f"workers: {report['workers_alive']} alive, {report['workers_dead']} dead "
        f"(no heartbeat for {settings.worker_dead_seconds:g} s)"
    )
    if report["workers"]:
        print_table(report["workers"], _WORKER_COLUMNS)
    typer.echo("")
    typer.echo("queue:" if report["queue"] else "queue: empty")
    if report["queue"]:
        print_table(report["queue"], _QUEUE_COLUMNS)
    typer.echo("")
    typer.echo(_last_prune_line(report["last_prune"]))


def _last_prune_line(last: dict[str, Any] | None) -> str:
    """``last prune: <when> (<source>), removed: runs 2, events 5``; kinds with none left out."""
    if last is None:
        return "last prune: never"
    removed = ", ".join(f"{kind} {n}" for kind, n in last["counts"].items() if n) or "nothing"
    return f"last prune: {last['finished_at']} ({last['source']}), removed: {removed}"
