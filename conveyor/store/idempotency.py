"""Idempotency records: the SQL behind the ``Idempotency-Key`` header.

One row per (tenant, API key, header value). A request claims its key by inserting an
``in_flight`` row with insert-on-conflict, so of two concurrent requests with
the same key exactly one gets the row; the other reads it and is answered
from it. The winner then completes the row with the response, or deletes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, RowMapping, delete, select, update

from conveyor.domain.ids import new_id
from conveyor.store.dialect import insert as dialect_insert
from conveyor.store.dialect import is_postgresql
from conveyor.store.tables import idempotency_records

IN_FLIGHT = "in_flight"
DONE = "done"


def try_insert(
    conn: Connection,
    *,
    tenant_id: str,
    key_id: str,
    key: str,
    method: str,
    path: str,
    body_hash: str,
    now: datetime,
    expires_at: datetime,
) -> str | None:
    """Insert an in-flight record; its id, or None if the key is already taken."""
    stmt = (
        dialect_insert(conn, idempotency_records)
        .values(
            id=new_id(),
            tenant_id=tenant_id,
            key_id=key_id,
            key=key,
            method=method,
            path=path,
            body_hash=body_hash,
            status=IN_FLIGHT,
            created_at=now,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "key_id", "key"])
        # RETURNING rather than rowcount: psycopg reports -1 for some INSERTs.
        .returning(idempotency_records.c.id)
    )
    return conn.execute(stmt).scalar_one_or_none()


def get(conn: Connection, tenant_id: str, key_id: str, key: str) -> RowMapping | None:
    """The record of an API key's header value, row-locked on PostgreSQL until commit."""
    stmt = select(idempotency_records).where(
        idempotency_records.c.tenant_id == tenant_id,
        idempotency_records.c.key_id == key_id,
        idempotency_records.c.key == key,
    )
    if is_postgresql(conn):
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def take_over(
    conn: Connection,
    record: RowMapping,
    *,
    method: str,
    path: str,
    body_hash: str,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Turn an expired or abandoned record into a new in-flight one.

    A compare-and-set on the record's ``created_at``: of two requests taking
    over the same record, one wins. Returns True for the winner.
    """
    stmt = (
        update(idempotency_records)
        .where(
            idempotency_records.c.id == record["id"],
            idempotency_records.c.created_at == record["created_at"],
        )
        .values(
            method=method,
            path=path,
            body_hash=body_hash,
            status=IN_FLIGHT,
            response_status=None,
            response_body=None,
            response_headers=None,
            created_at=now,
            expires_at=expires_at,
        )
        .returning(idempotency_records.c.id)
    )
    return conn.execute(stmt).first() is not None


def complete(
    conn: Connection,
    record_id: str,
    *,
    status: int,
    body: str,
    headers: Sequence[tuple[str, str]],
) -> None:
    """Store the response of the request that holds the record."""
    conn.execute(
        update(idempotency_records)
        .where(idempotency_records.c.id == record_id)
        .values(
            status=DONE,
            response_status=status,
            response_body=body,
            response_headers=[list(h) for h in headers],
        )
    )


def remove(conn: Connection, record_id: str) -> None:
    """Delete a record, so the key can be used again."""
    conn.execute(delete(idempotency_records).where(idempotency_records.c.id == record_id))


def delete_expired(conn: Connection, now: datetime, limit: int = 10_000) -> int:
    """Delete up to ``limit`` records whose time is over; how many went (for pruning)."""
    ids = select(idempotency_records.c.id).where(idempotency_records.c.expires_at <= now)
    doomed = list(conn.execute(ids.limit(limit)).scalars())
    if doomed:
        conn.execute(delete(idempotency_records).where(idempotency_records.c.id.in_(doomed)))
    return len(doomed)
