"""``conveyor repair``: fix stored JSON that older versions let in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import DatabaseUrl, Output, OutputFormat, emit, handle_errors, now, open_db
from conveyor.services import repair as service

_COLUMNS = ("table", "column", "rows", "lone_surrogates", "non_finite", "too_deep")


@handle_errors
def repair(
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            envvar="CONVEYOR_REPAIR_DRY_RUN",
            show_envvar=True,
            help="only report what would be repaired; change nothing",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Repair stored JSON: lone surrogates, NaN/Infinity, nesting deeper than 64.

    Scans every JSON column of every table, page by page. Lone surrogates
    become U+FFFD, NaN and Infinity null, and sub-trees deeper than 64 levels
    the string "<removed: too deep>". Each run whose data changed gets a
    `run.repaired` history line naming the columns. Prints the counts per
    table and column; with --dry-run, what it would change. Safe to run while
    Conveyor runs, and again: a second run finds nothing.
    """
    db = open_db(database_url)
    try:
        found = service.Findings()
        for target in service.json_tables():
            after: Any = None
            while True:
                with db.read() as conn:
                    after = service.scan_page(conn, target, after, found)
                if after is None:
                    break
        if dry_run:
            _report(found, output, "would repair")
            return
        repaired = service.Findings()
        for cells in service.groups(found.cells):
            with db.transaction() as conn:
                service.repair_cells(conn, cells, now(), repaired)
        _report(repaired, output, "repaired")
    finally:
        db.dispose()


def _report(findings: service.Findings, output: OutputFormat, verb: str) -> None:
    rows = [vars(c) for c in sorted(findings.counts.values(), key=lambda c: (c.table, c.column))]
    if output is not OutputFormat.TABLE:
        emit(rows, output, _COLUMNS)
        return
    if not rows:
        typer.echo("nothing to repair: every stored JSON value is clean")
        return
    emit(rows, output, _COLUMNS)
    values = sum(c.rows for c in findings.counts.values())
    runs = len(findings.runs)
    summary = f"{values} value{'s' * (values != 1)} in {len(rows)} column{'s' * (len(rows) != 1)}"
    if verb == "repaired":
        typer.echo(f"repaired {summary}; {runs} run{'s' * (runs != 1)} got a run.repaired line")
    else:
        typer.echo(
            f"would repair {summary}, {runs} run{'s' * (runs != 1)} with them "
            "(dry run: nothing was changed)"
        )
