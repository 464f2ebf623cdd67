"""Template repository: templates and their immutable versions.

Like automations: every change inserts a ``template_versions`` row and points
the template at it; versions are never updated, so a message's
``template_version_id`` always names the content it was rendered from.
Deleting is soft (messages keep referring to the versions) and frees the name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, RowMapping, func, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.domain.ids import looks_like_id, new_id
from conveyor.store.messaging_tables import template_versions, templates

_live = templates.c.deleted_at.is_(None)
# The current version, joined by number: `current_version_id` is plain text
# while version ids are UUID columns, which SQLite stores in another form.
_CURRENT = (template_versions.c.template_id == templates.c.id) & (
    template_versions.c.version == templates.c.current_version
)


def get_template(conn: Connection, tenant_id: str, name: str) -> RowMapping | None:
    """The live template with this name, or None."""
    query = select(templates).where(
        templates.c.tenant_id == tenant_id, templates.c.name == name, _live
    )
    return conn.execute(query).mappings().first()


def get_current(conn: Connection, tenant_id: str, name: str) -> RowMapping | None:
    """The live template with this name joined to its current version, or None.

    Columns: the template's, plus ``content`` and ``version_created_at``.
    """
    query = (
        select(
            templates,
            template_versions.c.content,
            template_versions.c.created_at.label("version_created_at"),
        )
        .join(template_versions, _CURRENT)
        .where(templates.c.tenant_id == tenant_id, templates.c.name == name, _live)
    )
    return conn.execute(query).mappings().first()


def ids_named(conn: Connection, tenant_id: str, name: str) -> list[str]:
    """Ids of every template (live or deleted) that had this name."""
    query = select(templates.c.id).where(
        templates.c.tenant_id == tenant_id, templates.c.name == name
    )
    return [str(r) for r in conn.execute(query).scalars()]


def get_version(conn: Connection, tenant_id: str, version_id: str) -> RowMapping | None:
    """One version by id (also of a deleted template), or None."""
    if not looks_like_id(version_id):
        return None
    query = select(template_versions).where(
        template_versions.c.tenant_id == tenant_id,
        template_versions.c.id == str(UUID(version_id)),
    )
    return conn.execute(query).mappings().first()


def _insert_version(
    conn: Connection,
    *,
    tenant_id: str,
    template_id: str,
    version_id: str,
    version: int,
    content: dict[str, Any],
    now: datetime,
) -> None:
    conn.execute(
        template_versions.insert().values(
            id=version_id,
            tenant_id=tenant_id,
            template_id=template_id,
            version=version,
            content=content,
            created_at=now,
        )
    )


def create_template(
    conn: Connection,
    *,
    tenant_id: str,
    name: str,
    channel: str,
    content: dict[str, Any],
    now: datetime,
) -> RowMapping | None:
    """Insert a template at version 1; None if a live one with this name appeared meanwhile."""
    template_id, version_id = new_id(), new_id()
    try:
        # The savepoint keeps the caller's transaction usable after a violation.
        with conn.begin_nested():
            conn.execute(
                templates.insert().values(
                    id=template_id,
                    tenant_id=tenant_id,
                    name=name,
                    channel=channel,
                    current_version_id=version_id,
                    current_version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        return None
    _insert_version(
        conn,
        tenant_id=tenant_id,
        template_id=template_id,
        version_id=version_id,
        version=1,
        content=content,
        now=now,
    )
    return get_template(conn, tenant_id, name)


def add_version(
    conn: Connection,
    *,
    tenant_id: str,
    template_id: str,
    content: dict[str, Any],
    now: datetime,
) -> RowMapping | None:
    """Make ``content`` the next version of a live template; None if it is gone.

    The number is taken by incrementing it in the template row, so concurrent
    changes queue on that row instead of racing for a number.
    """
    version_id = new_id()
    version = conn.execute(
        update(templates)
        .where(templates.c.tenant_id == tenant_id, templates.c.id == template_id, _live)
        .values(
            current_version=templates.c.current_version + 1,
            current_version_id=version_id,
            updated_at=now,
        )
        .returning(templates.c.current_version, templates.c.name)
    ).first()
    if version is None:
        return None
    _insert_version(
        conn,
        tenant_id=tenant_id,
        template_id=template_id,
        version_id=version_id,
        version=int(version[0]),
        content=content,
        now=now,
    )
    return get_template(conn, tenant_id, str(version[1]))


def soft_delete(conn: Connection, tenant_id: str, template_id: str, now: datetime) -> bool:
    """Mark a live template deleted; False if there was none."""
    result = conn.execute(
        update(templates)
        .where(templates.c.tenant_id == tenant_id, templates.c.id == template_id, _live)
        .values(deleted_at=now, updated_at=now)
    )
    return result.rowcount > 0


def list_templates(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int,
    offset: int = 0,
    after_name: str | None = None,
    channel: str | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of live templates by name (with their current content), and the total."""
    where = [templates.c.tenant_id == tenant_id, _live]
    if channel is not None:
        where.append(templates.c.channel == channel)
    total = conn.execute(select(func.count()).select_from(templates).where(*where)).scalar_one()
    query = (
        select(
            templates,
            template_versions.c.content,
            template_versions.c.created_at.label("version_created_at"),
        )
        .join(template_versions, _CURRENT)
        .where(*where)
    )
    if after_name is not None:
        query = query.where(templates.c.name > after_name)
    query = query.order_by(templates.c.name).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)


def list_versions(
    conn: Connection,
    tenant_id: str,
    template_id: str,
    *,
    limit: int,
    offset: int = 0,
    before_version: int | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of a template's versions, newest first, and their total."""
    where = [
        template_versions.c.tenant_id == tenant_id,
        template_versions.c.template_id == template_id,
    ]
    total = conn.execute(
        select(func.count()).select_from(template_versions).where(*where)
    ).scalar_one()
    query = select(template_versions).where(*where)
    if before_version is not None:
        query = query.where(template_versions.c.version < before_version)
    query = query.order_by(template_versions.c.version.desc()).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)
