"""Erasing a contact (``DELETE /contacts/{id}?erase=true``): no trace of the person left.

In this order, each step in short transactions of its own:

1. The contact's values are gathered (``Eraser``): email, external id, the
   identity values its runs and events named it by, its push targets as shown.
2. Its unfinished runs are cancelled (reason ``erasure``), through the same
   path as ``POST /runs/{id}/cancel``, so nothing more runs or sends; so are
   the runs ``automation_failure`` triggers started for its runs (they carry
   its identity and trigger event, though no contact).
3. Every row linked to it is erased, a page at a time: its runs (real and
   simulated, and those failure runs) with their steps, attempts, history,
   waits, messages and tags;
   its events, messages and waits outside those runs; its dry-run results; and
   the tenant's idempotency records, dry-run requests and bulk operations
   (they hold request and response bodies that may name anyone). Each run
   gains one ``run.erased`` history line that says who asked, not what went.
4. The contact itself is deleted, last, so that an erasure cut short (a crash,
   a timeout) can simply be asked for again. If it gained a run or an event
   while a pass ran (an event about the person came in), another pass goes
   over what was made since, before the link to it goes with the contact.

Only the database's own text is changed (pure string replacement, no user
code). A tag or an idle concurrency slot named by a value is deleted rather
than rewritten: two of them would collapse into one ``[erased]`` key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, RowMapping, Table

from conveyor.channels import targets
from conveyor.domain.contacts import ContactNotFound
from conveyor.domain.erasure import Eraser
from conveyor.domain.errors import ConveyorError
from conveyor.domain.ids import new_id
from conveyor.engine.control import Actor, cancel_run
from conveyor.store import erasure as store
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import contacts, events, messages, waits
from conveyor.store.runs import append_events
from conveyor.store.tables import (
    bulk_operations,
    concurrency_slots,
    idempotency_records,
    run_events,
    run_tags,
    runs,
    step_attempts,
    step_runs,
)

RUN_ERASED = "run.erased"
CANCEL_REASON = "erasure"
RUNS_PER_TRANSACTION = 10  # a step output alone may hold 1 MiB
ROWS_PER_TRANSACTION = 200
# Passes at most: a second (and third) only over rows made while the first ran.
PASSES = 3
# The tables rows are rewritten in, as the answer counts them.
REDACTED_TABLES = (
    runs,
    step_runs,
    step_attempts,
    run_events,
    waits,
    messages,
    events,
    dry_run_results,
    dry_runs,
    idempotency_records,
    bulk_operations,
)
# Child rows of a run, erased with it.
_RUN_CHILDREN = (step_runs, step_attempts, run_events, waits, messages)
# Columns holding JSON as text rather than as a JSON column.
_JSON_TEXT = {("idempotency_records", "response_body")}


@dataclass
class Erasure:
    """What an erasure did: runs cancelled and marked, rows rewritten and removed per table."""

    contact_id: str
    runs_cancelled: int = 0
    runs: int = 0
    redacted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_names(), 0))
    removed: dict[str, int] = field(
        default_factory=lambda: {"contacts": 0, "run_tags": 0, "concurrency_slots": 0}
    )

    def as_dict(self) -> dict[str, Any]:
        """The answer of the API."""
        return {
            "contact_id": self.contact_id,
            "erased": True,
            "runs_cancelled": self.runs_cancelled,
            "runs": self.runs,
            "redacted": dict(self.redacted),
            "removed": dict(self.removed),
        }


def _names() -> list[str]:
    return [t.name for t in REDACTED_TABLES]


def erase_contact(
    db: Database,
    tenant_id: str,
    contact_id: str,
    *,
    actor: Actor,
    clock: Callable[[], datetime],
) -> Erasure:
    """Cancel the contact's unfinished runs, erase its values everywhere, then delete it.

    Raises:
        ContactNotFound: the tenant has no such contact.
    """
    with db.read() as conn:
        contact = store.find_contact(conn, tenant_id, contact_id)
        if contact is None:
            raise ContactNotFound(f"contact {contact_id} not found")
        cid = str(contact["id"])
        eraser = _eraser(conn, tenant_id, contact)
    report = Erasure(cid)
    since: datetime | None = None
    for attempt in range(1, PASSES + 1):
        if since is not None:  # the new rows may name the person in a new way
            with db.read() as conn:
                eraser = Eraser.of([*eraser.values, *_eraser(conn, tenant_id, contact).values])
        now = clock()
        line = {"type": RUN_ERASED, "data": actor.as_data(), "created_at": now}
        report.runs_cancelled += _cancel_runs(db, tenant_id, cid, actor, now)
        _erase_runs(db, tenant_id, cid, eraser, report, line, since)
        for table, where in store.linked_rows(tenant_id, cid, since):
            for rows in _pages(db, table, where):
                report.redacted[table.name] += _erase_rows(
                    rows.conn, table, rows.rows, eraser, tenant_id
                )
        if since is None:
            _remove_idle_slots(db, tenant_id, eraser, report)
        with db.transaction() as conn:
            if store.find_contact(conn, tenant_id, cid, lock=True) is None:
                break  # erased by a request at the same time
            # An event about the person that came in meanwhile made rows this pass may
            # have missed: another pass, over what is new only, before the link goes.
            if attempt < PASSES and store.activity_since(conn, tenant_id, cid, now):
                # The next pass goes over what was made since this one began.
                since = now
                continue
            store.remove(conn, contacts, (cid,))
            report.removed["contacts"] = 1
            break
    return report


def _remove_idle_slots(db: Database, tenant_id: str, eraser: Eraser, report: Erasure) -> None:
    """Delete the tenant's idle concurrency slots whose key holds a value."""
    slots = concurrency_slots
    for rows in _pages(db, slots, store.of_tenant(slots, tenant_id)):
        for row in rows.rows:
            if row["active"] == 0 and eraser.found_in(str(row["key"])):
                store.remove(rows.conn, slots, store.key_of(slots, row))
                report.removed["concurrency_slots"] += 1


def _eraser(conn: Connection, tenant_id: str, contact: RowMapping) -> Eraser:
    """The contact's values: email, external id, identity values, push targets as shown."""
    cid = str(contact["id"])
    values: set[str] = set(store.run_identity_values(conn, tenant_id, cid))
    values.update(v for v in (contact["email"], contact["external_id"]) if v)
    values.update(targets.shown_all(contact["push_targets"]))
    after: str | None = None
    while page := store.event_identities(conn, tenant_id, cid, after, ROWS_PER_TRANSACTION):
        for _, identity in page:
            if isinstance(identity, dict) and isinstance(identity.get("value"), str):
                values.add(identity["value"])
        after = page[-1][0]
    # Ids stay (they name no one outside this database), so the contact's own id is kept.
    values.discard(cid)
    return Eraser.of(values)


def _cancel_runs(db: Database, tenant_id: str, contact_id: str, actor: Actor, now: datetime) -> int:
    """Cancel the contact's unfinished runs, and those failure triggers started for its runs.

    One transaction each; returns how many were cancelled.
    """
    cancelled = 0
    skipped: set[str] = set()
    while True:
        with db.read() as conn:
            ids = [
                i
                for i in store.unfinished_runs(conn, tenant_id, contact_id, 100 + len(skipped))
                if i not in skipped
            ]
        if not ids:
            break
        cancelled += _cancel(db, tenant_id, ids, actor, now, skipped)
    after: str | None = None
    while True:
        with db.read() as conn:
            page = store.runs_of_contact(conn, tenant_id, contact_id, after, ROWS_PER_TRANSACTION)
            ids = store.failure_runs_of(conn, tenant_id, page, unfinished=True)
        cancelled += _cancel(db, tenant_id, ids, actor, now, skipped)
        if len(page) < ROWS_PER_TRANSACTION:
            return cancelled
        after = page[-1]


def _cancel(
    db: Database,
    tenant_id: str,
    run_ids: list[str],
    actor: Actor,
    now: datetime,
    skipped: set[str],
) -> int:
    cancelled = 0
    for run_id in run_ids:
        try:
            with db.transaction() as conn:
                cancel_run(conn, tenant_id, run_id, actor=actor, reason=CANCEL_REASON, now=now)
            cancelled += 1
        except ConveyorError:
            # It finished (or went) in the meantime: it is erased like any finished run.
            skipped.add(run_id)
    return cancelled


def _erase_runs(
    db: Database,
    tenant_id: str,
    contact_id: str,
    eraser: Eraser,
    report: Erasure,
    line: dict[str, Any],
    since: datetime | None,
) -> None:
    """Erase the contact's runs (made ``since``) with their child rows, a few per transaction."""
    where = store.contact_runs(tenant_id, contact_id, since)
    for rows in _pages(db, runs, where, RUNS_PER_TRANSACTION):
        conn = rows.conn
        # Runs a failure trigger started for these carry their identity and trigger event.
        failures = store.failure_runs_of(conn, tenant_id, store.ids_in(rows.rows))
        found = [*rows.rows, *store.rows_by_id(conn, runs, failures)]
        run_ids = store.ids_in(found)
        report.redacted["runs"] += _erase_rows(conn, runs, found, eraser, tenant_id)
        for child in _RUN_CHILDREN:
            found = store.rows_of_runs(conn, child, run_ids)
            report.redacted[child.name] += _erase_rows(conn, child, found, eraser, tenant_id)
        for tag in store.rows_of_runs(conn, run_tags, run_ids):
            if eraser.found_in(str(tag["tag"])):
                store.remove(conn, run_tags, store.key_of(run_tags, tag))
                report.removed["run_tags"] += 1
        for run_id in run_ids:
            # updated_at moves so that the run change feeds (dashboards) show the new values.
            append_events(
                conn,
                run_id=run_id,
                tenant_id=tenant_id,
                events=[line],
                run_values={"updated_at": line["created_at"]},
            )
        report.runs += len(run_ids)


@dataclass(frozen=True)
class _Page:
    conn: Connection
    rows: list[RowMapping]


def _pages(
    db: Database,
    table: Table,
    where: ColumnElement[bool],
    limit: int = ROWS_PER_TRANSACTION,
) -> Iterator[_Page]:
    """The rows of ``table`` matching ``where``, a page per write transaction."""
    after: store.Key | None = None
    while True:
        with db.transaction() as conn:
            rows = store.page(conn, table, where, after, limit)
            if not rows:
                return
            yield _Page(conn, rows)
            after = store.key_of(table, rows[-1])
        if len(rows) < limit:
            return


def _erase_rows(
    conn: Connection, table: Table, rows: list[RowMapping], eraser: Eraser, tenant_id: str
) -> int:
    """Rewrite the rows holding a value; how many changed."""
    changed = 0
    columns = store.text_columns(table)
    for row in rows:
        values = {}
        for column in columns:
            old = row[column.name]
            if old is None:
                continue
            new = _fitted(column, _erased(eraser, table.name, column.name, old))
            if new != old:
                values[column.name] = new
        if not values:
            continue
        key = store.key_of(table, row)
        _keep_unique(conn, table, row, values, key)
        store.write(conn, table, key, values)
        changed += 1
    return changed


def _erased(eraser: Eraser, table: str, column: str, value: Any) -> Any:
    if isinstance(value, str):
        text: Callable[[str], str] = (
            eraser.json_text if (table, column) in _JSON_TEXT else eraser.text
        )
        return text(value)
    return eraser.json(value)


def _fitted(column: Column[Any], value: Any, room: int = 0) -> Any:
    """``value`` cut to the column's length (``[erased]`` may be longer than what it replaced),
    leaving ``room`` characters free."""
    length = getattr(column.type, "length", None)
    if isinstance(value, str) and length is not None and len(value) > length - room:
        return value[: max(length - room, 0)]
    return value


def _keep_unique(
    conn: Connection, table: Table, row: RowMapping, values: dict[str, Any], key: store.Key
) -> None:
    """Make erased values under a unique key unique again: two events whose ids named the
    person in two ways would both become ``order-[erased]``. The first keeps the plain
    form; another gets ``~`` and a fresh id appended."""
    for columns in store.unique_keys(table):
        changed = [c for c in columns if c.name in values and isinstance(values[c.name], str)]
        if not changed:
            continue
        merged = {**row, **values}
        if store.taken(conn, table, columns, merged, key):
            column = changed[0]
            suffix = f"~{new_id()}"
            values[column.name] = _fitted(column, values[column.name], len(suffix)) + suffix
