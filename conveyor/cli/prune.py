"""``conveyor prune``: remove what is past its retention, across every tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import Connection

from conveyor.cli.common import (
    DatabaseUrl,
    Output,
    OutputFormat,
    build_settings,
    emit,
    handle_errors,
    now,
    open_db,
)
from conveyor.services import retention


@handle_errors
def prune(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            envvar="CONVEYOR_PRUNE_DRY_RUN",
            show_envvar=True,
            help="only count what would be removed; remove nothing",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Remove runs, events, dry runs, bulk operations, revoked keys and idempotency records
    past their retention (the CONVEYOR_RETENTION_* settings; 0 keeps a kind forever).

    Runs go by lineage: a run and its retries go together, once every one of them
    is finished and past its retention, with their steps, attempts, history,
    waits, messages and tags. Works a page (CONVEYOR_RETENTION_BATCH_SIZE rows)
    per transaction, so it is safe while Conveyor runs. Prints the count per
    kind; with --dry-run, what it would remove. Workers also prune on their own
    every CONVEYOR_RETENTION_PRUNE_INTERVAL seconds. See docs/operating.md.
    """
    settings = build_settings(database_url=database_url)
    db = open_db(database_url, settings)
    try:
        started = now()
        policy = retention.Policy.from_settings(settings, started)

        def run_page(page: retention.PageFn) -> retention.Progress:
            with db.transaction() as conn:
                return page(conn)

        progress = retention.prune_all(run_page, policy, apply=not dry_run)
        if not dry_run:
            with db.transaction() as conn:
                _record(conn, progress, started)
    finally:
        db.dispose()
    totals = progress.totals()
    emit({"dry_run": dry_run, **totals}, output, ("dry_run", *totals))
    if output is OutputFormat.TABLE:
        verb = "would remove" if dry_run else "removed"
        rows = sum(totals.values())
        note = " (dry run: nothing was removed)" if dry_run else ""
        typer.echo(f"{verb} {rows} row{'s' * (rows != 1)}{note}")
        if progress.skipped_pages:
            typer.echo(
                f"{progress.skipped_pages} page(s) changed meanwhile: left for the next prune"
            )


def _record(conn: Connection, progress: retention.Progress, started: datetime) -> None:
    retention.record(conn, progress, started_at=started, finished_at=now(), source="cli")
