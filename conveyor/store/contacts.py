"""Contact repository: every query names the tenant.

Email and external id are unique per tenant (partial unique indexes), so a
contact seen for the first time is created with ``INSERT ... ON CONFLICT DO
NOTHING`` and read back: whichever of two racing transactions inserts first
wins, and the other reads the winner's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Column,
    Connection,
    RowMapping,
    String,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from conveyor.domain.contacts import ContactConflict, ContactEmailTaken, ContactExternalIdTaken
from conveyor.domain.ids import looks_like_id, new_id
from conveyor.store.batch import insert_new, restrict_to
from conveyor.store.messaging_tables import contacts

Position = tuple[datetime, str]  # (created_at, id) of the last contact of a page

_BY_ID = select(contacts).where(
    contacts.c.tenant_id == bindparam("tenant_id"), contacts.c.id == bindparam("id")
)
# What finding a contact by a key needs; the JSON columns cost more to read.
_KEYS = (contacts.c.id, contacts.c.email, contacts.c.external_id)


def canonical_id(value: str) -> str | None:
    """The canonical form of a contact id, or None if ``value`` cannot be one."""
    return str(UUID(value)) if looks_like_id(value) else None


def get_contact(conn: Connection, tenant_id: str, contact_id: str) -> RowMapping | None:
    """One contact of the tenant by id, or None (also for a string that is no id)."""
    canonical = canonical_id(contact_id)
    if canonical is None:
        return None
    return conn.execute(_BY_ID, {"tenant_id": tenant_id, "id": canonical}).mappings().first()


def get_contacts(conn: Connection, tenant_id: str, ids: Iterable[str]) -> dict[str, RowMapping]:
    """The tenant's contacts among ``ids``, by id; ids that match nothing are left out."""
    wanted = {c for c in (canonical_id(i) for i in ids) if c is not None}
    if not wanted:
        return {}
    query = select(contacts).where(contacts.c.tenant_id == tenant_id)
    rows = conn.execute(restrict_to(conn, query, contacts.c.id, wanted)).mappings()
    return {str(r["id"]): r for r in rows}


def iter_contacts(
    conn: Connection, tenant_id: str, *, after: str | None, limit: int
) -> list[RowMapping]:
    """Up to ``limit`` of the tenant's contacts with an id greater than ``after``, by id.

    Walk every contact by passing the last id returned as the next ``after``
    (ids are UUIDv7, so this is creation order and new contacts come last).
    """
    query = select(contacts).where(contacts.c.tenant_id == tenant_id)
    if after is not None:
        query = query.where(contacts.c.id > after)
    return list(conn.execute(query.order_by(contacts.c.id).limit(limit)).mappings())


def _find(
    conn: Connection, tenant_id: str, column: Column[Any], values: Iterable[str]
) -> list[RowMapping]:
    query = select(*_KEYS).where(contacts.c.tenant_id == tenant_id)
    return list(conn.execute(restrict_to(conn, query, column, values)).mappings())


def find_by_emails(
    conn: Connection, tenant_id: str, emails: Iterable[str]
) -> dict[str, RowMapping]:
    """``id``, ``email`` and ``external_id`` of the contacts with these emails, by email."""
    values = set(emails)
    if not values:
        return {}
    return {r["email"]: r for r in _find(conn, tenant_id, contacts.c.email, values)}


def find_by_external_ids(
    conn: Connection, tenant_id: str, external_ids: Iterable[str]
) -> dict[str, RowMapping]:
    """``id``, ``email`` and ``external_id`` of the contacts with these external ids."""
    values = set(external_ids)
    if not values:
        return {}
    return {r["external_id"]: r for r in _find(conn, tenant_id, contacts.c.external_id, values)}


def _new_row(tenant_id: str, now: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": new_id(),
        "tenant_id": tenant_id,
        "external_id": None,
        "email": None,
        "push_targets": [],
        "attributes": {},
        "created_at": now,
        "updated_at": now,
    }
    row.update(values)
    return row


def insert_missing(
    conn: Connection,
    tenant_id: str,
    *,
    emails: Iterable[str] = (),
    external_ids: Iterable[str] = (),
    now: datetime,
) -> None:
    """Create a bare contact for each email and external id, unless one exists already.

    Values are inserted in sorted order, so two transactions creating
    overlapping sets take the unique-index locks in the same order and one
    waits for the other instead of deadlocking.
    """
    rows = [_new_row(tenant_id, now, email=e) for e in sorted(set(emails))]
    rows += [_new_row(tenant_id, now, external_id=x) for x in sorted(set(external_ids))]
    insert_new(conn, contacts, rows, contacts.c.id)


def _clash(
    conn: Connection, tenant_id: str, values: Mapping[str, Any], own_id: str
) -> ContactConflict | None:
    """The domain error for a unique violation on ``values``: which value another contact has."""
    email = values.get("email")
    if email is not None:
        other = find_by_emails(conn, tenant_id, [email]).get(email)
        if other is not None and str(other["id"]) != own_id:
            return ContactEmailTaken(f"another contact ({other['id']}) has the email {email!r}")
    external_id = values.get("external_id")
    if external_id is not None:
        other = find_by_external_ids(conn, tenant_id, [external_id]).get(external_id)
        if other is not None and str(other["id"]) != own_id:
            return ContactExternalIdTaken(
                f"another contact ({other['id']}) has the external id {external_id!r}"
            )
    return None


def create_contact(
    conn: Connection, tenant_id: str, values: Mapping[str, Any], now: datetime
) -> RowMapping:
    """Insert a contact; raise ``ContactEmailTaken`` / ``ContactExternalIdTaken`` on a clash."""
    row = _new_row(tenant_id, now, **values)
    try:
        # The savepoint keeps the caller's transaction usable after a violation.
        with conn.begin_nested():
            conn.execute(contacts.insert(), row)
    except IntegrityError as exc:
        clash = _clash(conn, tenant_id, values, row["id"])
        if clash is None:
            raise
        raise clash from exc
    created = get_contact(conn, tenant_id, row["id"])
    assert created is not None
    return created


def update_contact(
    conn: Connection,
    tenant_id: str,
    contact_id: str,
    values: Mapping[str, Any],
    now: datetime,
) -> RowMapping | None:
    """Set ``values`` on a contact; None if it does not exist; raise on an email/id clash."""
    canonical = canonical_id(contact_id)
    if canonical is None:
        return None
    try:
        with conn.begin_nested():
            changed = conn.execute(
                update(contacts)
                .where(contacts.c.tenant_id == tenant_id, contacts.c.id == canonical)
                .values(**values, updated_at=now)
                .returning(contacts.c.id)
            ).first()
    except IntegrityError as exc:
        clash = _clash(conn, tenant_id, values, canonical)
        if clash is None:
            raise
        raise clash from exc
    if changed is None:
        return None
    return get_contact(conn, tenant_id, canonical)


def lock_contact(conn: Connection, tenant_id: str, contact_id: str) -> RowMapping | None:
    """Read a contact for a read-modify-write (locked on PostgreSQL until the commit)."""
    canonical = canonical_id(contact_id)
    if canonical is None:
        return None
    # FOR UPDATE is dropped on SQLite, where BEGIN IMMEDIATE already serialises writers.
    query = _BY_ID.with_for_update()
    return conn.execute(query, {"tenant_id": tenant_id, "id": canonical}).mappings().first()


def with_push_targets(conn: Connection, *, after_id: str | None, limit: int) -> list[RowMapping]:
    """A page of contacts of every tenant that have push targets, by id (``secrets rotate``)."""
    query = select(contacts.c.id, contacts.c.tenant_id, contacts.c.push_targets)
    if after_id is not None:
        query = query.where(contacts.c.id > after_id)
    query = query.order_by(contacts.c.id).limit(limit)
    # JSON emptiness is spelt differently per database: filter the few rows here.
    return [r for r in conn.execute(query).mappings() if r["push_targets"]]


def set_push_targets(
    conn: Connection, tenant_id: str, contact_id: str, targets: Sequence[Any]
) -> None:
    """Store a contact's push targets as they are (re-sealed: ``updated_at`` stays)."""
    conn.execute(
        update(contacts)
        .where(contacts.c.tenant_id == tenant_id, contacts.c.id == contact_id)
        .values(push_targets=list(targets))
    )


def delete_contact(conn: Connection, tenant_id: str, contact_id: str) -> bool:
    """Delete a contact; False if there was none. Its events and messages lose the link."""
    canonical = canonical_id(contact_id)
    if canonical is None:
        return False
    result = conn.execute(
        delete(contacts).where(contacts.c.tenant_id == tenant_id, contacts.c.id == canonical)
    )
    return result.rowcount > 0


class attribute_text(FunctionElement[str]):
    """A top-level attribute as text: a string as is, a number or boolean as its JSON.

    ``attribute=vip:true`` then matches ``true`` and ``"true"`` alike on both
    databases (SQLite's ``json_extract`` alone would give ``1`` for ``true``).
    """

    type = String()
    inherit_cache = True
    name = "attribute_text"


@compiles(attribute_text, "postgresql")
def _attribute_text_pg(element: attribute_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = list(element.clauses)
    return compiler.process(column.op("->>")(cast(key, Text)), **kw)


@compiles(attribute_text, "sqlite")
def _attribute_text_sqlite(element: attribute_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = list(element.clauses)
    path = literal('$."') + key + literal('"')
    kind = func.json_type(column, path)
    expr = case(
        (kind == "true", literal("true")),
        (kind == "false", literal("false")),
        else_=cast(func.json_extract(column, path), Text),
    )
    return compiler.process(expr, **kw)


def _conditions(
    tenant_id: str,
    email: str | None,
    external_id: str | None,
    attributes: Sequence[tuple[str, str]],
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [contacts.c.tenant_id == tenant_id]
    if email is not None:
        conds.append(contacts.c.email == email)
    if external_id is not None:
        conds.append(contacts.c.external_id == external_id)
    for name, value in attributes:
        conds.append(attribute_text(contacts.c.attributes, literal(name, String)) == value)
    return conds


def list_contacts(
    conn: Connection,
    tenant_id: str,
    *,
    email: str | None = None,
    external_id: str | None = None,
    attributes: Sequence[tuple[str, str]] = (),
    limit: int,
    offset: int = 0,
    after: Position | None = None,
    count_cap: int,
) -> tuple[list[RowMapping], int]:
    """A page of contacts, newest first, and how many match (at most ``count_cap + 1``).

    Args:
        conn: connection.
        tenant_id: the tenant.
        email: only the contact with this (normalised) email.
        external_id: only the contact with this external id.
        attributes: ``(name, value)`` pairs that must all hold (see ``attribute_text``).
        limit: how many rows at most (ask for one more to learn if more follow).
        offset: rows to skip.
        after: keyset position: only contacts older than this one.
        count_cap: count exactly up to this many matches.
    """
    conds = _conditions(tenant_id, email, external_id, attributes)
    query = select(contacts).where(*conds)
    if after is not None:
        created_at, contact_id = after
        query = query.where(
            tuple_(contacts.c.created_at, contacts.c.id)
            < tuple_(
                literal(created_at, type_=contacts.c.created_at.type),
                literal(contact_id, type_=contacts.c.id.type),
            )
        )
    query = query.order_by(contacts.c.created_at.desc(), contacts.c.id.desc())
    rows = list(conn.execute(query.limit(limit).offset(offset or None)).mappings())
    matching = select(literal(1)).select_from(contacts).where(*conds).limit(count_cap + 1)
    total = conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
    return rows, int(total)
