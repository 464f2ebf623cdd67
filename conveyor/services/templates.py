"""Template use cases: put (create or a new version), read, list, delete.

A template's channel is fixed when it is created: its versions all render the
same kind of message, so a step that names it always gets what it expects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import Conflict, NotFound
from conveyor.domain.templating import InvalidTemplate, check_content
from conveyor.services.pagination import Page, page_of
from conveyor.store import templates as store

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
# Keys of each channel's content (push `data` is a JSON object of templates).
CONTENT_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text", "html"),
    "push": ("title", "body", "data"),
}


class TemplateNotFound(NotFound):
    """The template was not found."""

    code = "template_not_found"


class TemplateChannelChanged(Conflict):
    """A template keeps the channel it was created with."""

    code = "template_channel_changed"


def _content(channel: str, given: Mapping[str, Any]) -> dict[str, Any]:
    content = {key: given.get(key) for key in CONTENT_KEYS[channel]}
    if channel == "push" and content["data"] is None:
        content["data"] = {}
    return content


def _view(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "channel": row["channel"],
        "version": row["current_version"],
        "version_id": row["current_version_id"],
        "content": row["content"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def version_view(row: RowMapping, name: str, channel: str) -> dict[str, Any]:
    """The public view of a ``template_versions`` row."""
    return {
        "id": row["id"],
        "template_id": row["template_id"],
        "name": name,
        "channel": channel,
        "version": row["version"],
        "content": row["content"],
        "created_at": row["created_at"],
    }


def put_template(
    conn: Connection,
    tenant_id: str,
    name: str,
    channel: str,
    content: Mapping[str, Any],
    *,
    now: datetime,
) -> tuple[dict[str, Any], bool]:
    """Create the template, or give it a new version; return it and whether it was created.

    Raises:
        InvalidTemplate: a part does not compile (``errors`` names each field).
        TemplateChannelChanged: the template exists with the other channel.
    """
    stored = _content(channel, content)
    problems = check_content(channel, stored)
    if problems:
        fields = ", ".join(".".join(map(str, p["loc"])) for p in problems)
        raise InvalidTemplate(
            f"template {name!r}: {fields} does not compile",
            errors=[{**p, "loc": ["body", *p["loc"]]} for p in problems],
        )
    for _attempt in range(2):
        row = store.get_template(conn, tenant_id, name)
        if row is not None:
            if row["channel"] != channel:
                raise TemplateChannelChanged(
                    f"template {name!r} is a {row['channel']} template; "
                    f"delete it first to make it a {channel} one"
                )
            updated = store.add_version(
                conn, tenant_id=tenant_id, template_id=row["id"], content=stored, now=now
            )
            if updated is not None:
                return get_template(conn, tenant_id, name), False
        else:
            created = store.create_template(
                conn, tenant_id=tenant_id, name=name, channel=channel, content=stored, now=now
            )
            if created is not None:
                return get_template(conn, tenant_id, name), True
        # Lost a race with a concurrent create or delete of the same name: look again.
    raise Conflict(f"template {name!r} is being changed concurrently; try again")


def get_template(conn: Connection, tenant_id: str, name: str) -> dict[str, Any]:
    """The live template with its current version."""
    row = store.get_current(conn, tenant_id, name)
    if row is None:
        raise TemplateNotFound(f"template {name!r} not found")
    return _view(row)


def list_templates(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int,
    offset: int = 0,
    after_name: str | None = None,
    channel: str | None = None,
) -> Page[dict[str, Any]]:
    """A page of live templates by name, each with its current version."""
    rows, total = store.list_templates(
        conn,
        tenant_id,
        limit=limit + 1,
        offset=offset,
        after_name=after_name,
        channel=channel,
    )
    return page_of([_view(r) for r in rows], total, limit)


def list_versions(
    conn: Connection,
    tenant_id: str,
    name: str,
    *,
    limit: int,
    offset: int = 0,
    before_version: int | None = None,
) -> Page[dict[str, Any]]:
    """A page of a live template's versions, newest first."""
    row = store.get_template(conn, tenant_id, name)
    if row is None:
        raise TemplateNotFound(f"template {name!r} not found")
    rows, total = store.list_versions(
        conn, tenant_id, row["id"], limit=limit + 1, offset=offset, before_version=before_version
    )
    items = [version_view(r, row["name"], row["channel"]) for r in rows]
    return page_of(items, total, limit)


def delete_template(conn: Connection, tenant_id: str, name: str, *, now: datetime) -> None:
    """Delete a template: its name becomes free; its versions stay for the messages sent."""
    row = store.get_template(conn, tenant_id, name)
    if row is None or not store.soft_delete(conn, tenant_id, row["id"], now):
        raise TemplateNotFound(f"template {name!r} not found")
