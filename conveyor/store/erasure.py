"""SQL of contact erasure: the rows linked to a contact, page by page, and their text columns.

Which columns are read comes from the table metadata (every JSON, text and
string column that is not an id), so a column added later is erased too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    RowMapping,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    select,
    true,
    tuple_,
    update,
)

from conveyor.domain.status import CANCELLABLE_RUN_STATUSES
from conveyor.store.child_runs import is_failure_run
from conveyor.store.contacts import canonical_id
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import contacts, events, messages, waits
from conveyor.store.tables import bulk_operations, idempotency_records, runs

Key = tuple[Any, ...]


def of_tenant(table: Table, tenant_id: str) -> ColumnElement[bool]:
    """The tenant's rows of ``table``."""
    condition: ColumnElement[bool] = table.c.tenant_id == tenant_id
    return condition


def _made_since(column: Column[Any], since: datetime | None) -> ColumnElement[bool]:
    return true() if since is None else column >= since


def contact_runs(
    tenant_id: str, contact_id: str, since: datetime | None = None
) -> ColumnElement[bool]:
    """The contact's runs, real and simulated (those created ``since``, if given)."""
    return (
        of_tenant(runs, tenant_id)
        & (runs.c.contact_id == contact_id)
        & _made_since(runs.c.created_at, since)
    )


def linked_rows(
    tenant_id: str, contact_id: str, since: datetime | None = None
) -> list[tuple[Table, ColumnElement[bool]]]:
    """The rows outside its runs that may hold a contact's values, table by table.

    Its events, messages and waits (those of its runs again: harmless, they are
    erased already), its dry-run results, and the tenant's idempotency records,
    dry-run requests and bulk operations, whose bodies and filters may name
    anyone. With ``since``: the contact's rows made since then, nothing tenant-wide.
    """
    places = [
        (events, events.c.contact_id == contact_id, events.c.received_at),
        (messages, messages.c.contact_id == contact_id, messages.c.created_at),
        (waits, waits.c.contact_id == contact_id, waits.c.created_at),
        (dry_run_results, dry_run_results.c.profile_id == contact_id, dry_run_results.c.created_at),
    ]
    found: list[tuple[Table, ColumnElement[bool]]] = [
        (table, of_tenant(table, tenant_id) & linked & _made_since(made, since))
        for table, linked, made in places
    ]
    if since is None:
        tenant_wide = (idempotency_records, dry_runs, bulk_operations)
        found += [(table, of_tenant(table, tenant_id)) for table in tenant_wide]
    return found


def activity_since(conn: Connection, tenant_id: str, contact_id: str, since: datetime) -> bool:
    """True if the contact gained a run or an event at ``since`` or later."""
    new_event = (
        of_tenant(events, tenant_id)
        & (events.c.contact_id == contact_id)
        & (events.c.received_at >= since)
    )
    for table, where in [(runs, contact_runs(tenant_id, contact_id, since)), (events, new_event)]:
        if conn.execute(select(table.c.tenant_id).where(where).limit(1)).first() is not None:
            return True
    return False


def text_columns(table: Table) -> tuple[Column[Any], ...]:
    """The columns of ``table`` that may hold a person's values: JSON, text and strings."""
    return tuple(
        c
        for c in table.columns
        if isinstance(c.type, JSON | String) and c.name != "tenant_id" and not c.foreign_keys
    )


def _key_columns(table: Table) -> tuple[Column[Any], ...]:
    return tuple(table.primary_key.columns)


def _after(table: Table, after: Key) -> ColumnElement[bool]:
    keys = _key_columns(table)
    condition: ColumnElement[bool] = (
        keys[0] > after[0] if len(keys) == 1 else tuple_(*keys) > tuple_(*after)
    )
    return condition


def _is(table: Table, key: Key) -> ColumnElement[bool]:
    return and_(*(c == v for c, v in zip(_key_columns(table), key, strict=True)))


def key_of(table: Table, row: RowMapping) -> Key:
    """A row's primary key, in order."""
    return tuple(row[c.name] for c in _key_columns(table))


def page(
    conn: Connection,
    table: Table,
    where: ColumnElement[bool],
    after: Key | None,
    limit: int,
) -> list[RowMapping]:
    """Up to ``limit`` rows matching ``where`` after ``after`` in key order, locked where the
    database can."""
    keys = _key_columns(table)
    query = select(table).where(where).order_by(*keys).limit(limit).with_for_update()
    if after is not None:
        query = query.where(_after(table, after))
    return list(conn.execute(query).mappings())


def rows_of_runs(conn: Connection, table: Table, run_ids: Sequence[str]) -> list[RowMapping]:
    """Every row of ``table`` belonging to the runs ``run_ids``, locked where the database can."""
    query = select(table).where(table.c.run_id.in_(run_ids)).with_for_update()
    return list(conn.execute(query).mappings())


def write(conn: Connection, table: Table, key: Key, values: Mapping[str, Any]) -> None:
    """Store new values of one row (its key may be among them)."""
    conn.execute(update(table).where(_is(table, key)).values(**values))


def remove(conn: Connection, table: Table, key: Key) -> None:
    """Delete one row."""
    conn.execute(delete(table).where(_is(table, key)))


def unique_keys(table: Table) -> list[tuple[Column[Any], ...]]:
    """The column sets ``table`` holds unique: its primary key, constraints and unique indexes."""
    found = [_key_columns(table)]
    found += [tuple(c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)]
    found += [tuple(i.columns) for i in table.indexes if i.unique]
    return [cols for cols in found if cols]


def taken(
    conn: Connection, table: Table, columns: Sequence[Column[Any]], row: Mapping[str, Any], key: Key
) -> bool:
    """True if another row than ``key`` has ``row``'s values in ``columns``."""
    query = select(*_key_columns(table)).where(
        *(c == row[c.name] for c in columns), ~_is(table, key)
    )
    return conn.execute(query.limit(1)).first() is not None


def find_contact(
    conn: Connection, tenant_id: str, contact_id: str, *, lock: bool = False
) -> RowMapping | None:
    """The contact's row (locked where the database can, with ``lock``); None if none."""
    canonical = canonical_id(contact_id)
    if canonical is None:
        return None
    query = select(contacts).where(contacts.c.tenant_id == tenant_id, contacts.c.id == canonical)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def run_identity_values(conn: Connection, tenant_id: str, contact_id: str) -> list[str]:
    """The distinct identity values of the contact's runs (real and simulated)."""
    query = (
        select(runs.c.identity_value)
        .where(
            runs.c.tenant_id == tenant_id,
            runs.c.contact_id == contact_id,
            runs.c.identity_value.is_not(None),
        )
        .distinct()
    )
    return [str(v) for v in conn.execute(query).scalars()]


def event_identities(
    conn: Connection, tenant_id: str, contact_id: str, after: str | None, limit: int
) -> list[tuple[str, Any]]:
    """A page of the contact's events: ``(id, identity)``, by id."""
    query = (
        select(events.c.id, events.c.identity)
        .where(events.c.tenant_id == tenant_id, events.c.contact_id == contact_id)
        .order_by(events.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(events.c.id > after)
    return [(str(r.id), r.identity) for r in conn.execute(query)]


def unfinished_runs(conn: Connection, tenant_id: str, contact_id: str, limit: int) -> list[str]:
    """Ids of the contact's real runs that can still be cancelled, oldest first."""
    query = (
        select(runs.c.id)
        .where(
            runs.c.tenant_id == tenant_id,
            runs.c.contact_id == contact_id,
            runs.c.dry_run.is_(False),
            runs.c.status.in_([s.value for s in CANCELLABLE_RUN_STATUSES]),
        )
        .order_by(runs.c.id)
        .limit(limit)
    )
    return [str(v) for v in conn.execute(query).scalars()]


def runs_of_contact(
    conn: Connection, tenant_id: str, contact_id: str, after: str | None, limit: int
) -> list[str]:
    """A page of the ids of the contact's runs (real and simulated), by id."""
    query = (
        select(runs.c.id)
        .where(runs.c.tenant_id == tenant_id, runs.c.contact_id == contact_id)
        .order_by(runs.c.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(runs.c.id > after)
    return [str(v) for v in conn.execute(query).scalars()]


def failure_runs_of(
    conn: Connection, tenant_id: str, run_ids: Sequence[str], *, unfinished: bool = False
) -> list[str]:
    """Ids of the runs ``automation_failure`` triggers started for ``run_ids``.

    They carry the failed run's identity and trigger event, but no contact.
    """
    if not run_ids:
        return []
    query = select(runs.c.id).where(
        runs.c.tenant_id == tenant_id,
        is_failure_run(),  # ix_runs_failure_source
        runs.c.trigger_source_id.in_(list(run_ids)),
    )
    if unfinished:
        query = query.where(runs.c.status.in_([s.value for s in CANCELLABLE_RUN_STATUSES]))
    return [str(v) for v in conn.execute(query.order_by(runs.c.id)).scalars()]


def rows_by_id(conn: Connection, table: Table, ids: Sequence[str]) -> list[RowMapping]:
    """The rows of ``table`` with these ids, locked where the database can."""
    query = select(table).where(table.c.id.in_(ids)).order_by(table.c.id).with_for_update()
    return list(conn.execute(query).mappings())


def ids_in(rows: Iterable[RowMapping], column: str = "id") -> list[str]:
    """The values of ``column`` in ``rows``, as strings."""
    return [str(r[column]) for r in rows]
