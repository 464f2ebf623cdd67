"""Message use cases: list the emails and push notifications sent, read one with its content."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import NotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.times import iso
from conveyor.services.pagination import Page, page_of
from conveyor.services.runs import message_view
from conveyor.store import messages as store
from conveyor.store import templates as template_store
from conveyor.store.messages import MessageFilters


class MessageNotFound(NotFound):
    """The message was not found."""

    code = "message_not_found"


def summary(row: RowMapping) -> dict[str, Any]:
    """A message as lists show it: everything but the rendered content."""
    view = message_view(row)
    view.update(
        run_id=row["run_id"],
        template_name=row["template_name"],
        template_version=row["template_version"],
        idempotency_key=row["idempotency_key"],
        provider_message_id=row["provider_message_id"],
        updated_at=iso(row["updated_at"]),
    )
    return view


def list_messages(
    conn: Connection,
    tenant_id: str,
    *,
    channel: str | None = None,
    status: str | None = None,
    run_id: str | None = None,
    contact_id: str | None = None,
    template: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
) -> Page[dict[str, Any]]:
    """A page of the tenant's messages, newest first.

    ``template`` is a template's id, or a name: every template that had that
    name counts, deleted ones included (their messages were still sent).
    """
    template_ids: tuple[str, ...] | None = None
    if template is not None:
        template_ids = (
            (template,)
            if looks_like_id(template)
            else tuple(template_store.ids_named(conn, tenant_id, template))
        )
    filters = MessageFilters(
        channel=channel,
        status=status,
        run_id=run_id,
        contact_id=contact_id,
        template_ids=template_ids,
        created_after=created_after,
        created_before=created_before,
    )
    rows, total = store.list_messages(
        conn, tenant_id, filters, limit=limit + 1, offset=offset, after=after
    )
    return page_of([summary(r) for r in rows], total, limit)


def get_message(conn: Connection, tenant_id: str, message_id: str) -> dict[str, Any]:
    """One message with its rendered content (what was sent, or stored in the outbox)."""
    row = store.get_message(conn, tenant_id, message_id)
    if row is None:
        raise MessageNotFound(f"message {message_id} not found")
    return {**summary(row), "content": row["content"]}
