"""Automation repository: automations and their immutable versions.

Every change to a definition inserts a new ``automation_versions`` row and
points the automation at it; versions are never updated, so a run pinned to
a version always sees the definition it started with. Deleting is soft: the
row stays (runs reference it) and its name becomes free again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, RowMapping, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.domain.errors import AutomationNameTaken
from conveyor.domain.ids import looks_like_id, new_id
from conveyor.store.tables import automation_versions, automations

_live = automations.c.deleted_at.is_(None)
# Built once: triggering a run looks its automation up on every call.
_BY_ID = select(automations).where(
    automations.c.tenant_id == bindparam("tenant_id"), automations.c.id == bindparam("ref"), _live
)
_BY_NAME = select(automations).where(
    automations.c.tenant_id == bindparam("tenant_id"),
    automations.c.name == bindparam("ref"),
    _live,
)


def get_automation(conn: Connection, tenant_id: str, ref: str) -> RowMapping | None:
    """The live automation named by ``ref`` (its id if it looks like one, else its name)."""
    if looks_like_id(ref):
        # Canonical form: SQLite compares ids as text, so case and dashes matter there.
        stmt, value = _BY_ID, str(UUID(ref))
    else:
        stmt, value = _BY_NAME, ref
    return conn.execute(stmt, {"tenant_id": tenant_id, "ref": value}).mappings().first()


def get_automations(conn: Connection, tenant_id: str, ids: Iterable[str]) -> dict[str, RowMapping]:
    """The tenant's live automations with these (stored, canonical) ids, by id."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = select(automations).where(
        automations.c.tenant_id == tenant_id, automations.c.id.in_(wanted), _live
    )
    return {str(row["id"]): row for row in conn.execute(query).mappings()}


def get_version(conn: Connection, tenant_id: str, version_id: str) -> RowMapping | None:
    """One ``automation_versions`` row by id (also of a deleted automation), or None."""
    if not looks_like_id(version_id):
        return None
    query = select(automation_versions).where(
        automation_versions.c.tenant_id == tenant_id,
        automation_versions.c.id == str(UUID(version_id)),
    )
    return conn.execute(query).mappings().first()


def get_version_number(
    conn: Connection, tenant_id: str, automation_id: str, version: int
) -> RowMapping | None:
    """Version number ``version`` of an automation, or None."""
    query = select(automation_versions).where(
        automation_versions.c.tenant_id == tenant_id,
        automation_versions.c.automation_id == automation_id,
        automation_versions.c.version == version,
    )
    return conn.execute(query).mappings().first()


def _name_in_use(conn: Connection, tenant_id: str, name: str) -> bool:
    query = select(automations.c.id).where(
        automations.c.tenant_id == tenant_id, automations.c.name == name, _live
    )
    return conn.execute(query).first() is not None


def _insert_version(
    conn: Connection,
    *,
    version_id: str,
    tenant_id: str,
    automation_id: str,
    version: int,
    definition: dict[str, Any],
    now: datetime,
    created_by: str | None,
) -> None:
    conn.execute(
        automation_versions.insert().values(
            id=version_id,
            tenant_id=tenant_id,
            automation_id=automation_id,
            version=version,
            definition=definition,
            created_at=now,
            created_by=created_by,
        )
    )


def create_automation(
    conn: Connection,
    *,
    tenant_id: str,
    name: str,
    enabled: bool,
    trigger_type: str,
    definition: dict[str, Any],
    now: datetime,
    created_by: str | None = None,
) -> RowMapping:
    """Insert an automation with version 1; raise ``AutomationNameTaken`` on a live duplicate."""
    automation_id, version_id = new_id(), new_id()
    try:
        # The savepoint keeps the caller's transaction usable after a violation.
        with conn.begin_nested():
            conn.execute(
                automations.insert().values(
                    id=automation_id,
                    tenant_id=tenant_id,
                    name=name,
                    enabled=enabled,
                    trigger_type=trigger_type,
                    current_version_id=version_id,
                    current_version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        if _name_in_use(conn, tenant_id, name):
            raise AutomationNameTaken(f"automation {name!r} already exists") from None
        raise
    _insert_version(
        conn,
        version_id=version_id,
        tenant_id=tenant_id,
        automation_id=automation_id,
        version=1,
        definition=definition,
        now=now,
        created_by=created_by,
    )
    row = get_automation(conn, tenant_id, automation_id)
    assert row is not None
    return row


def add_version(
    conn: Connection,
    *,
    tenant_id: str,
    automation_id: str,
    name: str,
    enabled: bool,
    trigger_type: str,
    definition: dict[str, Any],
    now: datetime,
    created_by: str | None = None,
) -> RowMapping | None:
    """Make ``definition`` the next version of a live automation; None if there is none.

    The version number is taken by incrementing it in the automation row, so
    concurrent updates queue on that row lock instead of racing for a number.
    Raise ``AutomationNameTaken`` if a rename collides with a live automation.
    """
    version_id = new_id()
    try:
        with conn.begin_nested():
            version = conn.execute(
                update(automations)
                .where(
                    automations.c.tenant_id == tenant_id,
                    automations.c.id == automation_id,
                    _live,
                )
                .values(
                    name=name,
                    enabled=enabled,
                    trigger_type=trigger_type,
                    current_version=automations.c.current_version + 1,
                    current_version_id=version_id,
                    updated_at=now,
                )
                .returning(automations.c.current_version)
            ).scalar_one_or_none()
    except IntegrityError:
        if _name_in_use(conn, tenant_id, name):
            raise AutomationNameTaken(f"automation {name!r} already exists") from None
        raise
    if version is None:
        return None
    _insert_version(
        conn,
        version_id=version_id,
        tenant_id=tenant_id,
        automation_id=automation_id,
        version=version,
        definition=definition,
        now=now,
        created_by=created_by,
    )
    return get_automation(conn, tenant_id, automation_id)


def soft_delete_automation(
    conn: Connection, tenant_id: str, automation_id: str, now: datetime
) -> bool:
    """Mark a live automation deleted; False if there was none."""
    result = conn.execute(
        update(automations)
        .where(automations.c.tenant_id == tenant_id, automations.c.id == automation_id, _live)
        .values(deleted_at=now, updated_at=now)
    )
    return result.rowcount > 0


def list_automations(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int,
    offset: int = 0,
    after_name: str | None = None,
    enabled: bool | None = None,
    trigger_type: str | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of live automations ordered by name, and the total matching the filters.

    Args:
        conn: connection.
        tenant_id: the tenant.
        limit: how many rows at most.
        offset: rows to skip.
        after_name: keyset cursor: only names sorting after this one.
        enabled: only enabled (True) or disabled (False) automations.
        trigger_type: only automations with this trigger type.
    """
    where = [automations.c.tenant_id == tenant_id, _live]
    if enabled is not None:
        where.append(automations.c.enabled == enabled)
    if trigger_type is not None:
        where.append(automations.c.trigger_type == trigger_type)
    total = conn.execute(select(func.count()).select_from(automations).where(*where)).scalar_one()
    query = select(automations).where(*where)
    if after_name is not None:
        query = query.where(automations.c.name > after_name)
    query = query.order_by(automations.c.name).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)


def list_versions(
    conn: Connection,
    tenant_id: str,
    automation_id: str,
    *,
    limit: int,
    offset: int = 0,
    before_version: int | None = None,
) -> tuple[list[RowMapping], int]:
    """A page of an automation's versions, newest first, and their total.

    Args:
        conn: connection.
        tenant_id: the tenant.
        automation_id: the automation.
        limit: how many rows at most.
        offset: rows to skip.
        before_version: keyset cursor: only versions older than this number.
    """
    where = [
        automation_versions.c.tenant_id == tenant_id,
        automation_versions.c.automation_id == automation_id,
    ]
    total = conn.execute(
        select(func.count()).select_from(automation_versions).where(*where)
    ).scalar_one()
    query = select(automation_versions).where(*where)
    if before_version is not None:
        query = query.where(automation_versions.c.version < before_version)
    query = query.order_by(automation_versions.c.version.desc()).limit(limit).offset(offset)
    return list(conn.execute(query).mappings()), int(total)


def list_enabled_by_trigger(
    conn: Connection, tenant_id: str, trigger_type: str
) -> list[RowMapping]:
    """The tenant's live, enabled automations whose trigger is of ``trigger_type``."""
    query = select(automations).where(
        automations.c.tenant_id == tenant_id,
        automations.c.trigger_type == trigger_type,
        automations.c.enabled.is_(True),
        _live,
    )
    return list(conn.execute(query).mappings())
