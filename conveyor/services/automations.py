"""Automation use cases: validate, create, change (a new version each time), delete, read.

Definitions are stored as the validated model's JSON, so what the engine
reads back is normalised (durations as ISO 8601, defaults filled in) and
always valid for the step types known when it was saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, RowMapping

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import AutomationDefinition, parse_definition
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import AutomationNotFound, EgressDenied, InvalidDefinition
from conveyor.domain.expressions import is_template
from conveyor.domain.ids import looks_like_id
from conveyor.engine.schedules import check_trigger as check_schedule_trigger
from conveyor.engine.schedules import sync_schedule
from conveyor.services.pagination import Page, page_of
from conveyor.store import automations as store


def check_egress(defn: AutomationDefinition, egress: EgressPolicy) -> None:
    """Refuse a step ``url`` that is a literal address or a host name the policy denies.

    A templated URL is judged only when the step connects (as every host name
    is again then, on what it resolves to).

    Raises:
        EgressDenied: with ``errors`` (``type: egress_denied``) naming each field.
    """
    errors = []
    for i, step in enumerate(defn.steps):
        url = step.settings.get("url")
        if isinstance(url, str) and not is_template(url):
            why = egress.url_refusal(url)
            if why is not None:
                errors.append({"loc": ["steps", i, "url"], "msg": why, "type": "egress_denied"})
    if errors:
        raise EgressDenied(errors)


def validate_definition(raw: Any, egress: EgressPolicy | None = None) -> AutomationDefinition:
    """Validate a raw definition against the known step types and the egress policy.

    ``egress`` is the server's policy (``Settings.egress_policy()``); None is
    the default one, which permits no private address.

    Raises:
        InvalidDefinition: with ``errors``, a list of ``{loc, msg, type}``.
        EgressDenied: a step's URL leads where this server does not connect.
    """
    if not isinstance(raw, Mapping):
        raise InvalidDefinition(
            [{"loc": [], "msg": "a definition must be an object", "type": "dict_type"}]
        )
    defn = parse_definition(raw, step_type_specs())
    check_schedule_trigger(defn.trigger)
    if looks_like_id(defn.name):
        # Ids and names share one place in URLs (`/automations/{id or name}`).
        raise InvalidDefinition(
            [{"loc": ["name"], "msg": "a name must not look like an id", "type": "name_is_id"}]
        )
    check_egress(defn, egress or EgressPolicy())
    return defn


def definition_json(defn: AutomationDefinition) -> dict[str, Any]:
    """The stored (and served) form of a validated definition."""
    data: dict[str, Any] = defn.model_dump(mode="json", exclude_none=True, by_alias=True)
    # ``exclude_none`` is for the common fields; a step setting given as null is
    # the author's choice and must survive, so the extras are put back whole.
    for step, dumped in zip(defn.steps, data["steps"], strict=True):
        dumped.update(to_jsonable_python(step.model_extra or {}))
    return data


def _summary(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "enabled": row["enabled"],
        "trigger_type": row["trigger_type"],
        "version": row["current_version"],
        "version_id": row["current_version_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _detail(conn: Connection, row: RowMapping) -> dict[str, Any]:
    version = store.get_version(conn, row["tenant_id"], row["current_version_id"])
    assert version is not None, "an automation always points at a stored version"
    definition = version["definition"]
    return {
        **_summary(row),
        "description": definition.get("description"),
        "tags": definition.get("tags", []),
        "definition": definition,
    }


def version_to_dict(row: RowMapping) -> dict[str, Any]:
    """The public view of an ``automation_versions`` row."""
    return {
        "id": row["id"],
        "automation_id": row["automation_id"],
        "version": row["version"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "definition": row["definition"],
    }


def _require(conn: Connection, tenant_id: str, ref: str) -> RowMapping:
    row = store.get_automation(conn, tenant_id, ref)
    if row is None:
        raise AutomationNotFound(f"automation {ref!r} not found")
    return row


def create_automation(
    conn: Connection,
    tenant_id: str,
    raw: Any,
    *,
    now: datetime,
    created_by: str | None = None,
    egress: EgressPolicy | None = None,
) -> dict[str, Any]:
    """Create an automation at version 1 from a raw definition.

    Raises:
        InvalidDefinition: the definition is not valid.
        EgressDenied: a step's URL leads where ``egress`` does not permit.
        AutomationNameTaken: a live automation has this name.
    """
    defn = validate_definition(raw, egress)
    row = store.create_automation(
        conn,
        tenant_id=tenant_id,
        name=defn.name,
        enabled=defn.enabled,
        trigger_type=defn.trigger.type,
        definition=definition_json(defn),
        now=now,
        created_by=created_by,
    )
    sync_schedule(conn, tenant_id, row["id"], defn, now)
    return _detail(conn, row)


def update_automation(
    conn: Connection,
    tenant_id: str,
    ref: str,
    raw: Any,
    *,
    now: datetime,
    created_by: str | None = None,
    egress: EgressPolicy | None = None,
) -> dict[str, Any]:
    """Replace the definition of an automation: always a new version.

    Runs already started stay on the version they started with. The name in
    the definition may differ from the current one (a rename).

    Raises:
        AutomationNotFound: no live automation is named by ``ref``.
        InvalidDefinition: the definition is not valid.
        EgressDenied: a step's URL leads where ``egress`` does not permit.
        AutomationNameTaken: a rename collides with another live automation.
    """
    current = _require(conn, tenant_id, ref)
    defn = validate_definition(raw, egress)
    row = store.add_version(
        conn,
        tenant_id=tenant_id,
        automation_id=current["id"],
        name=defn.name,
        enabled=defn.enabled,
        trigger_type=defn.trigger.type,
        definition=definition_json(defn),
        now=now,
        created_by=created_by,
    )
    if row is None:  # deleted between the two statements
        raise AutomationNotFound(f"automation {ref!r} not found")
    sync_schedule(conn, tenant_id, row["id"], defn, now)
    return _detail(conn, row)


def apply_automation(
    conn: Connection,
    tenant_id: str,
    raw: Any,
    *,
    now: datetime,
    created_by: str | None = None,
    egress: EgressPolicy | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create the automation named in ``raw``, or add a version to it; True if created."""
    defn = validate_definition(raw, egress)
    kw: dict[str, Any] = {"now": now, "created_by": created_by, "egress": egress}
    if store.get_automation(conn, tenant_id, defn.name) is None:
        return create_automation(conn, tenant_id, raw, **kw), True
    return update_automation(conn, tenant_id, defn.name, raw, **kw), False


def delete_automation(conn: Connection, tenant_id: str, ref: str, *, now: datetime) -> None:
    """Soft-delete an automation: its runs and versions stay, its name is freed.

    Raises:
        AutomationNotFound: no live automation is named by ``ref``.
    """
    row = _require(conn, tenant_id, ref)
    if not store.soft_delete_automation(conn, tenant_id, row["id"], now):
        raise AutomationNotFound(f"automation {ref!r} not found")
    sync_schedule(conn, tenant_id, row["id"], None, now)


def get_automation(conn: Connection, tenant_id: str, ref: str) -> dict[str, Any]:
    """One live automation by id or name, with its current definition.

    Raises:
        AutomationNotFound: there is none.
    """
    return _detail(conn, _require(conn, tenant_id, ref))


def list_automations(
    conn: Connection,
    tenant_id: str,
    *,
    limit: int = 100,
    offset: int = 0,
    after_name: str | None = None,
    enabled: bool | None = None,
    trigger_type: str | None = None,
) -> Page[dict[str, Any]]:
    """A page of live automations by name (without their definitions)."""
    rows, total = store.list_automations(
        conn,
        tenant_id,
        limit=limit + 1,
        offset=offset,
        after_name=after_name,
        enabled=enabled,
        trigger_type=trigger_type,
    )
    page = page_of(rows, total, limit)
    return Page([_summary(r) for r in page.items], page.total, page.has_more)


def list_versions(
    conn: Connection,
    tenant_id: str,
    ref: str,
    *,
    limit: int = 100,
    offset: int = 0,
    before_version: int | None = None,
) -> Page[dict[str, Any]]:
    """A page of an automation's versions, newest first, with their definitions.

    Raises:
        AutomationNotFound: no live automation is named by ``ref``.
    """
    automation = _require(conn, tenant_id, ref)
    rows, total = store.list_versions(
        conn,
        tenant_id,
        automation["id"],
        limit=limit + 1,
        offset=offset,
        before_version=before_version,
    )
    page = page_of(rows, total, limit)
    return Page([version_to_dict(r) for r in page.items], page.total, page.has_more)


def get_version(conn: Connection, tenant_id: str, ref: str, version: int) -> dict[str, Any]:
    """Version number ``version`` of a live automation.

    Raises:
        AutomationNotFound: no such automation or version.
    """
    automation = _require(conn, tenant_id, ref)
    row = store.get_version_number(conn, tenant_id, automation["id"], version)
    if row is None:
        raise AutomationNotFound(f"automation {ref!r} has no version {version}")
    return version_to_dict(row)
