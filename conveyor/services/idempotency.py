"""The ``Idempotency-Key`` header: claim a key, answer repeats, keep the first response.

A request with a key first claims it (one transaction): a new key, or one
whose record has expired or was abandoned, gives the request the record and it
proceeds; otherwise the stored record decides the answer: the first response
again, "reused with another request" or "still in flight". After the request,
its response is stored (``finish``) or the record is dropped (``abandon``) so
that the key may be used again.

Services take a connection and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from conveyor.store import idempotency as store

# How long a key is kept: a repeat within this time is answered from the record.
TTL = timedelta(hours=24)
# An in-flight record this old belongs to a request that died with its process
# (a live request finishes or abandons its record); a repeat may take it over.
ABANDONED_AFTER = timedelta(minutes=5)
MAX_KEY_LENGTH = 255  # the column's width


@dataclass(frozen=True)
class Claimed:
    """The request holds the key's record and proceeds."""

    record_id: str


@dataclass(frozen=True)
class Replay:
    """A repeat of a finished request: answer with its response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Reused:
    """The key was used for a different request (method, path, query or body)."""


@dataclass(frozen=True)
class InFlight:
    """The first request with this key has not finished yet."""


Claim = Claimed | Replay | Reused | InFlight


def check_key(key: str) -> str | None:
    """Why ``key`` is not a usable idempotency key, or None if it is."""
    if not key:
        return "must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"must be at most {MAX_KEY_LENGTH} characters"
    if not key.isprintable() or not key.isascii():
        return "must be printable ASCII"
    return None


def fingerprint(method: str, path: str, query: str, content_type: str, body: bytes) -> str:
    """A hash of what makes two requests "the same request".

    A JSON body is hashed in a canonical form (sorted keys, no spaces), so a
    client that re-serialises its body differently on a retry still matches.
    """
    canonical = body
    if body and "json" in content_type:
        try:
            canonical = json.dumps(
                json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except (ValueError, RecursionError):
            # Not JSON after all, nested past what json parses, or holding what
            # UTF-8 cannot encode (a lone surrogate): the raw bytes decide.
            pass
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim(
    conn: Connection,
    *,
    tenant_id: str,
    key_id: str,
    key: str,
    method: str,
    path: str,
    body_hash: str,
    now: datetime,
) -> Claim:
    """Claim ``key`` of API key ``key_id`` for a request, or say how it must be answered."""
    values: dict[str, Any] = {
        "method": method,
        "path": path[:500],
        "body_hash": body_hash,
        "now": now,
        "expires_at": now + TTL,
    }
    record_id = store.try_insert(conn, tenant_id=tenant_id, key_id=key_id, key=key, **values)
    if record_id is not None:
        return Claimed(record_id)
    record = store.get(conn, tenant_id, key_id, key)
    if record is None:
        # Deleted between our insert and our read (a 5xx or an expiry sweep).
        record_id = store.try_insert(conn, tenant_id=tenant_id, key_id=key_id, key=key, **values)
        return Claimed(record_id) if record_id is not None else InFlight()
    expired = record["expires_at"] <= now
    abandoned = (
        record["status"] == store.IN_FLIGHT and record["created_at"] <= now - ABANDONED_AFTER
    )
    if expired or abandoned:
        if store.take_over(conn, record, **values):
            return Claimed(record["id"])
        return InFlight()  # another repeat took it over just now
    if record["body_hash"] != body_hash:
        return Reused()
    if record["status"] == store.IN_FLIGHT:
        return InFlight()
    return Replay(
        status=int(record["response_status"]),
        headers=[(str(n), str(v)) for n, v in record["response_headers"] or ()],
        body=str(record["response_body"] or "").encode(),
    )


def finish(
    conn: Connection,
    record_id: str,
    *,
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
) -> bool:
    """Keep the response for repeats; False (and the record dropped) if it cannot be kept.

    A body that is not UTF-8 text cannot be stored in the text column; such a
    record is dropped, so a repeat runs the request again.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        store.remove(conn, record_id)
        return False
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        store.remove(conn, record_id)
        return False
    store.complete(conn, record_id, status=status, body=text, headers=headers)
    return True


def abandon(conn: Connection, record_id: str) -> None:
    """Drop the record: the request failed in a way the client may retry."""
    store.remove(conn, record_id)


def prune(conn: Connection, now: datetime) -> int:
    """Delete expired records (for ``conveyor prune``); how many went."""
    return store.delete_expired(conn, now)
