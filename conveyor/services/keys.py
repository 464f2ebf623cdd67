"""API key use cases: create (the token is shown once), list, revoke, authenticate.

A key may be given an expiry; after it the key authenticates no more, as if
revoked. A key can only create or revoke keys whose scopes it holds itself,
so a narrower admin key can neither mint nor take away broader access.

A token is ``cvk_`` plus 32 random bytes (URL-safe base64). Only its SHA-256 is
stored: the token is high-entropy, so a fast hash is enough and a slow
password hash would only add latency to every request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import ApiKeyNotFound, Forbidden
from conveyor.domain.scopes import parse_scopes, sort_scopes
from conveyor.domain.times import iso
from conveyor.services.audit import Action, Actor, record
from conveyor.services.pagination import Page, page_of
from conveyor.store import keys as store

TOKEN_PREFIX = "cvk_"
PREFIX_LENGTH = 12  # what listings show of a token: enough to recognise it, useless to use it


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of one tenant, with its scopes."""

    tenant_id: str
    key_id: str
    label: str
    scopes: frozenset[str]
    # When the key was last recorded as used (conveyor.api.key_usage).
    last_used_at: datetime | None = None
    # When it stops working (None: never); checked on every request, cached or not.
    expires_at: datetime | None = None

    def has(self, scope: str) -> bool:
        """True if this key holds ``scope``."""
        return scope in self.scopes

    @property
    def requester(self) -> str:
        """How records name who asked: the key's label, or its id when it has none."""
        return self.label or self.key_id


def check_scope(principal: Principal, scope: str) -> None:
    """Raise ``Forbidden`` naming ``scope`` unless the key holds it.

    The one scope check: API routes (``conveyor.api.auth.require``) and the
    dashboard's pages and offered actions both go through ``Principal.has``.
    """
    if not principal.has(scope):
        raise Forbidden(f"this API key lacks the scope `{scope}`")


def generate_token() -> str:
    """A new random API token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_to_dict(row: RowMapping) -> dict[str, Any]:
    """The public view of a key row (never the hash)."""
    return {
        "id": row["id"],
        "tenant_id": row["tenant_id"],
        "label": row["label"],
        "prefix": row["prefix"],
        "scopes": sort_scopes(row["scopes"]),
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
        "expires_at": row["expires_at"],
        "last_used_at": row["last_used_at"],
    }


def create_key(
    conn: Connection,
    *,
    tenant_id: str,
    scopes: Iterable[str],
    now: datetime,
    label: str = "",
    granted_by: Principal | None = None,
    expires_at: datetime | None = None,
    actor: Actor | None = None,
) -> tuple[dict[str, Any], str]:
    """Create a key; return its public view and the token (which is never stored).

    Args:
        conn: connection.
        tenant_id: the tenant the key acts for.
        scopes: the scopes to grant.
        now: creation time.
        label: a name for people.
        granted_by: the key making the request, if any; a key cannot grant
            scopes it does not hold itself.
        expires_at: when the key stops working (None: never); must be after ``now``.
        actor: who is creating it, for the audit log (None: not recorded,
            for fixtures and the development key).

    Raises:
        UnknownScope: a scope name is not known.
        Forbidden: ``granted_by`` lacks one of the scopes.
        ValueError: ``expires_at`` is not after ``now``.
    """
    if expires_at is not None and expires_at <= now:
        raise ValueError("must be in the future")
    wanted = parse_scopes(scopes)
    if granted_by is not None:
        missing = sort_scopes(wanted - granted_by.scopes)
        if missing:
            raise Forbidden(f"a key cannot grant scopes it does not hold: {', '.join(missing)}")
    token = generate_token()
    row = store.insert_key(
        conn,
        tenant_id=tenant_id,
        label=label,
        prefix=token[:PREFIX_LENGTH],
        token_hash=hash_token(token),
        scopes=sort_scopes(wanted),
        now=now,
        expires_at=expires_at,
    )
    key = key_to_dict(row)
    if actor is not None:
        record(
            conn,
            actor,
            Action.KEY_CREATED,
            target_type="api_key",
            target_id=key["id"],
            details={"label": label, "scopes": key["scopes"], "expires_at": iso(expires_at)},
            now=now,
        )
    return key, token


def list_keys(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int = 100,
    offset: int = 0,
    after_id: str | None = None,
    include_revoked: bool = True,
) -> Page[dict[str, Any]]:
    """A page of a tenant's keys, oldest first."""
    rows, total = store.list_keys(
        conn,
        tenant_id,
        limit=limit + 1,
        offset=offset,
        after_id=after_id,
        include_revoked=include_revoked,
    )
    page = page_of(rows, total, limit)
    return Page([key_to_dict(r) for r in page.items], page.total, page.has_more)


def get_key(conn: Connection, tenant_id: str, key_id: str) -> dict[str, Any]:
    """One key of the tenant; raise ``ApiKeyNotFound`` if there is none."""
    row = store.get_key(conn, tenant_id, key_id)
    if row is None:
        raise ApiKeyNotFound(f"API key {key_id} not found")
    return key_to_dict(row)


def revoke_key(
    conn: Connection,
    tenant_id: str,
    key_id: str,
    *,
    now: datetime,
    revoked_by: Principal | None = None,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Revoke a key of the tenant (revoking twice is harmless); return its view.

    Args:
        conn: connection.
        tenant_id: the tenant.
        key_id: the key to revoke.
        now: revocation time.
        revoked_by: the key making the request, if any; it must hold every
            scope of the key it revokes.
        actor: who is revoking it, for the audit log (a repeat is not recorded).

    Raises:
        ApiKeyNotFound: the tenant has no key with this id.
        Forbidden: ``revoked_by`` lacks one of the key's scopes.
    """
    key = get_key(conn, tenant_id, key_id)
    if revoked_by is not None:
        missing = sort_scopes(frozenset(key["scopes"]) - revoked_by.scopes)
        if missing:
            raise Forbidden(
                f"a key cannot revoke a key holding scopes it does not hold: {', '.join(missing)}"
            )
    if store.revoke_key(conn, tenant_id, key_id, now) and actor is not None:
        record(
            conn,
            actor,
            Action.KEY_REVOKED,
            target_type="api_key",
            target_id=key["id"],
            details={"label": key["label"], "scopes": key["scopes"]},
            now=now,
        )
    return get_key(conn, tenant_id, key_id)


def revoke_key_any_tenant(conn: Connection, key_id: str, *, now: datetime) -> dict[str, Any]:
    """Revoke a key by id whatever its tenant (operators, from the CLI; audited as such)."""
    row = store.get_key_by_id(conn, key_id)
    if row is None:
        raise ApiKeyNotFound(f"API key {key_id} not found")
    tenant_id = row["tenant_id"]
    return revoke_key(conn, tenant_id, key_id, now=now, actor=Actor.operator(tenant_id))


def authenticate(conn: Connection, token: str, now: datetime) -> Principal | None:
    """The principal a token stands for, or None if it is unknown, revoked or expired."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = store.get_key_by_hash(conn, hash_token(token))
    if row is None or row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    return Principal(
        tenant_id=row["tenant_id"],
        key_id=row["id"],
        label=row["label"],
        scopes=frozenset(row["scopes"]),
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
    )


def record_use(conn: Connection, uses: dict[str, datetime]) -> None:
    """Write the keys' last use times (``{key id: time}``)."""
    store.record_use(conn, uses)
