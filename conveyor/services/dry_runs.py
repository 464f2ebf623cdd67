"""Dry runs: requesting one, following its progress, cancelling it.

A request is checked in full before anything is written, so a refused request
leaves no row behind; an accepted one writes the ``dry_runs`` row and one
``dry_run`` task per day, and nothing else. Workers do the rest
(``conveyor.dryrun.days``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import AutomationNotFound, Conflict, ConveyorError, NotFound
from conveyor.domain.ids import new_id
from conveyor.domain.times import iso
from conveyor.dryrun.days import days_between
from conveyor.store import automations as automation_store
from conveyor.store import contacts as contact_store
from conveyor.store import definitions
from conveyor.store import dry_runs as store


class InvalidDryRun(ConveyorError):
    """The dry run request cannot be simulated as asked (dates, profiles, version, trigger)."""

    code = "invalid_dry_run"


class DryRunNotFound(NotFound):
    """No such dry run in this tenant."""

    code = "dry_run_not_found"


class DryRunFinished(Conflict):
    """The dry run has completed or failed: there is nothing left to cancel."""

    code = "dry_run_finished"


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidDryRun(f"unknown time zone {name!r}") from exc
    return name


def _days(start: date | None, end: date | None, zone: str, now: datetime) -> tuple[date, date]:
    """The range asked for: no date is today in ``zone``; one date alone is that one day."""
    if start is None:
        day = end if end is not None else now.astimezone(ZoneInfo(zone)).date()
        return day, day
    return start, end if end is not None else start


def first_day_with_history(zone: str, now: datetime, history_days: int) -> date | None:
    """The first whole day (in ``zone``) whose events are all inside the event retention."""
    if history_days <= 0:
        return None
    local = (now - timedelta(days=history_days)).astimezone(ZoneInfo(zone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return local.date() if local == midnight else local.date() + timedelta(days=1)


def _check_history(start: date, zone: str, now: datetime, history_days: int) -> None:
    first = first_day_with_history(zone, now, history_days)
    if first is not None and start < first:
        raise InvalidDryRun(
            f"the range starts on {start.isoformat()}, before the event retention window "
            f"({history_days} days): events before it may be pruned, so the earliest "
            f"start_date is {first.isoformat()}"
        )


def request_dry_run(
    conn: Connection,
    tenant_id: str,
    automation_ref: str,
    *,
    start_date: date | None,
    end_date: date | None,
    timezone: str | None,
    profile_ids: Sequence[str] | None,
    version: int | None,
    payload: Mapping[str, Any],
    requested_by: str | None,
    max_days: int,
    now: datetime,
    history_days: int = 0,
) -> dict[str, Any]:
    """Check the request, record the dry run and queue its days; return its view.

    The days are local to the dry run's time zone (``timezone``, else the
    schedule trigger's, else UTC). Without dates the range is today there;
    with one date alone, that one day. ``history_days`` is the event
    retention (``CONVEYOR_RETENTION_EVENTS_DAYS``; 0: forever): a range that
    starts before the first whole day inside it would simulate over events
    already pruned, so it is refused.

    Raises:
        AutomationNotFound: no live automation ``automation_ref``.
        InvalidDryRun: bad range, version, time zone, trigger or profiles.
    """
    automation = automation_store.get_automation(conn, tenant_id, automation_ref)
    if automation is None:
        raise AutomationNotFound(f"automation {automation_ref} not found")
    if version is None:
        version_id = str(automation["current_version_id"])
    else:
        row = automation_store.get_version_number(conn, tenant_id, automation["id"], version)
        if row is None:
            raise InvalidDryRun(f"automation {automation['name']} has no version {version}")
        version_id = str(row["id"])
    loaded = definitions.load(conn, version_id)
    trigger = loaded.definition.trigger
    if trigger.type == "automation_failure":
        # Its runs come from other runs' failures, which a dry run does not replay.
        raise InvalidDryRun("automation_failure triggers cannot be dry-run")
    zone = _zone(timezone or (trigger.timezone if trigger.type == "schedule" else "UTC"))
    start_date, end_date = _days(start_date, end_date, zone, now)
    if end_date < start_date:
        raise InvalidDryRun("`end_date` is before `start_date`")
    _check_history(start_date, zone, now, history_days)
    days = days_between(start_date, end_date)
    if len(days) > max_days:
        raise InvalidDryRun(f"the range spans {len(days)} days; at most {max_days} are allowed")
    ids: list[str] | None = None
    if profile_ids is not None:
        found = contact_store.get_contacts(conn, tenant_id, profile_ids)
        unknown = [p for p in profile_ids if contact_store.canonical_id(p) not in found]
        if unknown:
            raise InvalidDryRun(f"unknown profile_ids: {', '.join(map(str, unknown[:20]))}")
        ids = list(dict.fromkeys(str(contact_store.canonical_id(p)) for p in profile_ids))
    if trigger.type == "manual" and not ids:
        raise InvalidDryRun("a manual trigger needs `profile_ids`: the contacts to simulate")
    dry_run_id = new_id()
    arguments: dict[str, Any] = {
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
        "timezone": zone,
        "profile_ids": ids,
        "version": loaded.version,
        "payload": dict(payload),
    }
    store.insert_dry_run(
        conn,
        {
            "id": dry_run_id,
            "tenant_id": tenant_id,
            "automation_id": automation["id"],
            "version_id": version_id,
            "status": "queued",
            "start_date": start_date.isoformat(),
            "end_date": end_date.isoformat(),
            "timezone": zone,
            "profile_ids": ids,
            "arguments": arguments,
            "requested_by": requested_by,
            "days_total": len(days),
            "days_done": 0,
            # Manual: known now; event and schedule triggers find their contacts day by day.
            "contacts_total": len(ids) * len(days) if trigger.type == "manual" and ids else 0,
            "contacts_done": 0,
            "counts": {"success": 0, "failed": 0, "skipped": 0},
            "error": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        },
    )
    store.enqueue_days(conn, tenant_id=tenant_id, dry_run_id=dry_run_id, days=days, now=now)
    return get_dry_run(conn, tenant_id, dry_run_id)


def dry_run_view(conn: Connection, dr: RowMapping) -> dict[str, Any]:
    """The wire form of a dry run, with its progress."""
    return {
        "id": dr["id"],
        "automation_id": dr["automation_id"],
        "version": definitions.load(conn, dr["version_id"]).version,
        "status": dr["status"],
        "start_date": dr["start_date"],
        "end_date": dr["end_date"],
        "timezone": dr["timezone"],
        "profile_ids": dr["profile_ids"],
        "arguments": dr["arguments"],
        "requested_by": dr["requested_by"],
        "days": {"done": dr["days_done"], "total": dr["days_total"]},
        "contacts": {"done": dr["contacts_done"], "total": dr["contacts_total"]},
        "counts": dr["counts"],
        "error": dr["error"],
        "created_at": iso(dr["created_at"]),
        "updated_at": iso(dr["updated_at"]),
        "completed_at": iso(dr["completed_at"]),
    }


def get_dry_run(conn: Connection, tenant_id: str, dry_run_id: str) -> dict[str, Any]:
    """One dry run of the tenant with its progress; ``DryRunNotFound`` if there is none."""
    dr = store.get_dry_run(conn, dry_run_id, tenant_id)
    if dr is None:
        raise DryRunNotFound(f"dry run {dry_run_id} not found")
    return dry_run_view(conn, dr)


def cancel_dry_run(
    conn: Connection, tenant_id: str, dry_run_id: str, *, now: datetime
) -> dict[str, Any]:
    """Stop a dry run: days not started are dropped, results already stored stay.

    Cancelling a cancelled dry run changes nothing; one that completed or
    failed is a ``DryRunFinished`` conflict.
    """
    dr = store.get_dry_run(conn, dry_run_id, tenant_id)
    if dr is None:
        raise DryRunNotFound(f"dry run {dry_run_id} not found")
    if dr["status"] not in ("completed", "failed", "cancelled"):
        # Tasks before the dry run's row, the order a worker's day takes them in
        # (its fence, then its progress), so the two never deadlock; a day in
        # flight finishes first and its results stay.
        store.delete_day_tasks(conn, dr["id"])
        dr = store.get_dry_run(conn, dry_run_id, tenant_id, lock=True)
        assert dr is not None
    if dr["status"] in ("completed", "failed"):
        raise DryRunFinished(f"dry run {dry_run_id} is {dr['status']}")
    if dr["status"] != "cancelled":
        store.update_dry_run(
            conn, dr["id"], {"status": "cancelled", "updated_at": now, "completed_at": now}
        )
    return get_dry_run(conn, tenant_id, dry_run_id)
