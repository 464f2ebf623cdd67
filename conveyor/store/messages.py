"""Message repository: the emails and push notifications send steps deliver.

A message row is keyed by ``(tenant_id, idempotency_key)``. A send step claims
the row (``sending``) in its own committed transaction before it calls the
provider, and settles it (``sent`` or ``failed``) in another one after.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, RowMapping, and_, func, or_, select, update

from conveyor.domain.ids import looks_like_id
from conveyor.store.dialect import insert as upsert_insert
from conveyor.store.messaging_tables import messages, template_versions, templates
from conveyor.store.tables import runs

SENDING, SENT, FAILED = "sending", "sent", "failed"


def claim(conn: Connection, row: Mapping[str, Any]) -> tuple[RowMapping, bool]:
    """Claim the message with ``row['idempotency_key']`` for sending.

    Inserts the row as ``sending``; if the key exists already and the message
    was ``sent``, it is left alone. A ``sending`` (its worker died during the
    provider call) or ``failed`` message is taken over: it becomes ``sending``
    again with this attempt's run, step, content and provider.

    Returns:
        The message row, and True when the caller must call the provider
        (False: it was sent already and is to be reused).
    """
    stmt = upsert_insert(conn, messages).on_conflict_do_nothing(
        index_elements=["tenant_id", "idempotency_key"]
    )
    # RETURNING rather than rowcount: psycopg reports -1 for some INSERTs.
    inserted = conn.execute(stmt.returning(messages.c.id), dict(row)).first()
    if inserted is None:
        existing = _by_key(conn, row["tenant_id"], row["idempotency_key"])
        assert existing is not None, "a conflicting row exists"
        if existing["status"] == SENT:
            return existing, False
        conn.execute(
            update(messages)
            .where(messages.c.id == existing["id"])
            .values(
                status=SENDING,
                last_event="sending",
                error=None,
                **{
                    k: row[k]
                    for k in (
                        "run_id",
                        "step_key",
                        "contact_id",
                        "template_id",
                        "template_version_id",
                        "provider",
                        "subject",
                        "content",
                        "updated_at",
                    )
                },
            )
        )
    found = _by_key(conn, row["tenant_id"], row["idempotency_key"])
    assert found is not None
    return found, True


def _by_key(conn: Connection, tenant_id: str, key: str) -> RowMapping | None:
    query = select(messages).where(
        messages.c.tenant_id == tenant_id, messages.c.idempotency_key == key
    )
    return conn.execute(query).mappings().first()


def mark_sent(
    conn: Connection, message_id: str, provider_message_id: str | None, now: datetime
) -> None:
    """The provider accepted the message."""
    conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(
            status=SENT,
            last_event="send",
            provider_message_id=provider_message_id,
            error=None,
            sent_at=now,
            updated_at=now,
        )
    )


def mark_failed(conn: Connection, message_id: str, error: dict[str, Any], now: datetime) -> None:
    """The provider refused the message, or could not be reached."""
    conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(status=FAILED, last_event="failed", error=error, updated_at=now)
    )


# Messages with their template's name and version number (the template may be deleted since).
_WITH_TEMPLATE = select(
    messages,
    templates.c.name.label("template_name"),
    template_versions.c.version.label("template_version"),
).select_from(
    messages.outerjoin(templates, templates.c.id == messages.c.template_id).outerjoin(
        template_versions, template_versions.c.id == messages.c.template_version_id
    )
)


def get_message(conn: Connection, tenant_id: str, message_id: str) -> RowMapping | None:
    """One message of the tenant (with ``template_name`` and ``template_version``), or None."""
    if not looks_like_id(message_id):
        return None
    query = _WITH_TEMPLATE.where(
        messages.c.tenant_id == tenant_id, messages.c.id == str(UUID(message_id))
    )
    return conn.execute(query).mappings().first()


def get_messages(conn: Connection, ids: Iterable[str]) -> Sequence[RowMapping]:
    """Messages by id, oldest first (run detail adds those a run reused from its lineage)."""
    wanted = sorted({str(UUID(i)) for i in ids if isinstance(i, str) and looks_like_id(i)})
    if not wanted:
        return []
    query = select(messages).where(messages.c.id.in_(wanted)).order_by(messages.c.created_at)
    return conn.execute(query).mappings().all()


def lineage_root(conn: Connection, run_id: str) -> str:
    """The first run of a retry lineage, following ``retry_of`` links up from ``run_id``."""
    current, seen = run_id, {run_id}
    while True:
        parent = conn.execute(select(runs.c.retry_of).where(runs.c.id == current)).scalar()
        if parent is None or str(parent) in seen:
            return current
        current = str(parent)
        seen.add(current)


@dataclass(frozen=True)
class MessageFilters:
    """The message list filters; every one given must hold."""

    channel: str | None = None
    status: str | None = None
    run_id: str | None = None
    contact_id: str | None = None
    template_ids: tuple[str, ...] | None = None  # None: any template
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_messages(
    conn: Connection,
    tenant_id: str,
    filters: MessageFilters,
    *,
    limit: int,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of messages, newest first (``created_at``, then ``id``), and the total.

    ``after`` is a keyset cursor: the ``(created_at, id)`` of the last message
    of the previous page.
    """
    where: list[Any] = [messages.c.tenant_id == tenant_id]
    for column, value in (
        (messages.c.channel, filters.channel),
        (messages.c.status, filters.status),
        (messages.c.run_id, filters.run_id),
        (messages.c.contact_id, filters.contact_id),
    ):
        if value is not None:
            where.append(column == value)
    if filters.template_ids is not None:
        where.append(messages.c.template_id.in_(filters.template_ids))
    if filters.created_after is not None:
        where.append(messages.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        where.append(messages.c.created_at < filters.created_before)
    total = conn.execute(select(func.count()).select_from(messages).where(*where)).scalar_one()
    query = _WITH_TEMPLATE.where(*where)
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(
                messages.c.created_at < at,
                and_(messages.c.created_at == at, messages.c.id < last_id),
            )
        )
    query = query.order_by(messages.c.created_at.desc(), messages.c.id.desc())
    return list(conn.execute(query.limit(limit).offset(offset)).mappings()), int(total)
