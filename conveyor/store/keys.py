"""API key repository. Only the SHA-256 of a token is stored, never the token."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from sqlalchemy import Connection, RowMapping, func, select, update

from conveyor.domain.ids import looks_like_id, new_id
from conveyor.store.tables import api_keys


def insert_key(
    conn: Connection,
    *,
    tenant_id: str,
    label: str,
    prefix: str,
    token_hash: str,
    scopes: Iterable[str],
    now: datetime,
    expires_at: datetime | None = None,
) -> RowMapping:
    """Insert an API key row and return it."""
    key_id = new_id()
    conn.execute(
        api_keys.insert().values(
            id=key_id,
            tenant_id=tenant_id,
            label=label,
            prefix=prefix,
            token_hash=token_hash,
            scopes=list(scopes),
            created_at=now,
            expires_at=expires_at,
        )
    )
    row = get_key(conn, tenant_id, key_id)
    assert row is not None
    return row


def get_key(conn: Connection, tenant_id: str, key_id: str) -> RowMapping | None:
    """The key with this id in this tenant (revoked or not), or None."""
    if not looks_like_id(key_id):
        return None
    query = select(api_keys).where(
        api_keys.c.tenant_id == tenant_id, api_keys.c.id == str(UUID(key_id))
    )
    return conn.execute(query).mappings().first()


def get_key_by_id(conn: Connection, key_id: str) -> RowMapping | None:
    """The key with this id in any tenant.

    Only for operators (the CLI's ``keys revoke ID``), who act across tenants.
    """
    if not looks_like_id(key_id):
        return None
    query = select(api_keys).where(api_keys.c.id == str(UUID(key_id)))
    return conn.execute(query).mappings().first()


def get_key_by_hash(conn: Connection, token_hash: str) -> RowMapping | None:
    """The key whose token hashes to ``token_hash``, revoked or not.

    Not filtered by tenant: this lookup is how a request's tenant is found.
    """
    query = select(api_keys).where(api_keys.c.token_hash == token_hash)
    return conn.execute(query).mappings().first()


def list_keys(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int,
    offset: int = 0,
    after_id: str | None = None,
    include_revoked: bool = True,
) -> tuple[list[RowMapping], int]:
    """One page of a tenant's keys, oldest first (ids are UUIDv7), and the total.

    Args:
        conn: connection.
        tenant_id: the tenant.
        limit: how many rows at most.
        offset: rows to skip (ignored rows still count in the total).
        after_id: keyset cursor: only keys created after this one.
        include_revoked: False leaves revoked keys out.
    """
    where = [api_keys.c.tenant_id == tenant_id]
    if not include_revoked:
        where.append(api_keys.c.revoked_at.is_(None))
    total = conn.execute(select(func.count()).select_from(api_keys).where(*where)).scalar_one()
    query = select(api_keys).where(*where)
    if after_id is not None:
        query = query.where(api_keys.c.id > after_id)
    query = query.order_by(api_keys.c.id).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)


def revoke_key(conn: Connection, tenant_id: str, key_id: str, now: datetime) -> bool:
    """Mark a live key revoked; False if there is no live key with this id in the tenant."""
    if not looks_like_id(key_id):
        return False
    result = conn.execute(
        update(api_keys)
        .where(
            api_keys.c.tenant_id == tenant_id,
            api_keys.c.id == str(UUID(key_id)),
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return result.rowcount > 0


def record_use(conn: Connection, uses: dict[str, datetime]) -> None:
    """Write each key's ``last_used_at``, never moving it back (another process may be ahead)."""
    for key_id, when in uses.items():
        conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < when),
            )
            .values(last_used_at=when)
        )
