"""Automation use cases: validate, create, change (a new version each time), delete, read.

Definitions are stored as the validated model's JSON, so what the engine
reads back is normalised (durations as ISO 8601, defaults filled in) and
always valid for the step types known when it was saved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, RowMapping

from conveyor.actions.registry import step_type_specs
from conveyor.domain.definition import AutomationDefinition, StepDef, check_definition
from conveyor.domain.egress import EgressPolicy
from conveyor.domain.errors import AutomationNotFound, EgressDenied, InvalidDefinition
from conveyor.domain.expressions import is_template
from conveyor.domain.ids import looks_like_id
from conveyor.engine.schedules import check_trigger as check_schedule_trigger
from conveyor.engine.schedules import sync_schedule
from conveyor.services.pagination import Page, page_of
from conveyor.store import automations as store


def _egress_problems(
    steps: Iterable[tuple[int, StepDef]], egress: EgressPolicy
) -> list[dict[str, Any]]:
    """Each step ``url`` that is a literal address or a host name the policy denies.

    A templated URL is judged only when the step connects (as every host name
    is again then, on what it resolves to).
    """
    errors = []
    for i, step in steps:
        url = step.settings.get("url")
        if isinstance(url, str) and not is_template(url):
            why = egress.url_refusal(url)
            if why is not None:
                errors.append({"loc": ["steps", i, "url"], "msg": why, "type": "egress_denied"})
    return errors


def _problems(
    raw: Any, egress: EgressPolicy
) -> tuple[AutomationDefinition | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """A raw definition checked in full: the model, its problems, and its egress refusals."""
    if not isinstance(raw, Mapping):
        return None, [{"loc": [], "msg": "a definition must be an object", "type": "dict_type"}], []
    checked = check_definition(raw, step_type_specs())
    errors = list(checked.errors)
    if checked.trigger is not None:
        try:
            check_schedule_trigger(checked.trigger)
        except InvalidDefinition as exc:
            errors.extend(exc.errors)
    if checked.name is not None and looks_like_id(checked.name):
        # Ids and names share one place in URLs (`/automations/{id or name}`).
        errors.append(
            {"loc": ["name"], "msg": "a name must not look like an id", "type": "name_is_id"}
        )
    return checked.definition, errors, _egress_problems(checked.steps, egress)


def validate_definition(raw: Any, egress: EgressPolicy | None = None) -> AutomationDefinition:
    """Validate a raw definition against the known step types and the egress policy.

    ``egress`` is the server's policy (``Settings.egress_policy()``); None is
    the default one, which permits no private address. Every problem is
    reported at once, an egress refusal among the others.

    Raises:
        InvalidDefinition: with ``errors``, a list of ``{loc, msg, type}``
            (``egress_denied`` ones included when there are others).
        EgressDenied: a step's URL leads where this server does not connect,
            and nothing else is wrong.
    """
    return validate_definitions([raw], egress)[0]


def validate_definitions(
    raws: Sequence[Any], egress: EgressPolicy | None = None
) -> list[AutomationDefinition]:
    """Validate several definitions (a multi-document apply), reporting every problem of each.

    With more than one definition, each problem's ``loc`` starts with
    ``["documents", <index from 0>]``.

    Raises:
        InvalidDefinition: any definition has a problem other than egress
            (``errors`` then lists the egress refusals too).
        EgressDenied: refusals by the egress policy are the only problems.
    """
    policy = egress or EgressPolicy()
    found: list[AutomationDefinition] = []
    errors: list[dict[str, Any]] = []
    denied: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        defn, problems, refused = _problems(raw, policy)
        where: list[str | int] = ["documents", index] if len(raws) > 1 else []
        errors += [{**e, "loc": [*where, *e["loc"]]} for e in problems]
        denied += [{**e, "loc": [*where, *e["loc"]]} for e in refused]
        if defn is not None:
            found.append(defn)
    if errors:
        raise InvalidDefinition(errors + denied)
    if denied:
        raise EgressDenied(denied)
    return found


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


def apply_automations(
    conn: Connection,
    tenant_id: str,
    raws: Sequence[Any],
    *,
    now: datetime,
    created_by: str | None = None,
    egress: EgressPolicy | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """Apply several definitions (a multi-document file) in the caller's one transaction.

    Every definition is checked before any is saved, and every problem of
    every one is reported at once (``validate_definitions``: each ``loc``
    starts with ``["documents", index]`` when there are several).
    """
    validate_definitions(raws, egress)
    return [
        apply_automation(conn, tenant_id, raw, now=now, created_by=created_by, egress=egress)
        for raw in raws
    ]


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
