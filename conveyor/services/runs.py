"""Run use cases: trigger a run, and the run views (summary and detail).

Services take a connection and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain import sandbox
from conveyor.domain.contacts import parse_identity
from conveyor.domain.errors import AutomationDisabled, AutomationNotFound, RunNotFound
from conveyor.domain.status import StepStatus
from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, concurrency_key, create_run, manual_event
from conveyor.services.identity import resolve_identity
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store import messages as message_store
from conveyor.store import runs as run_store
from conveyor.store.db import Database
from conveyor.store.definitions import LoadedDefinition

Row = Mapping[str, Any] | RowMapping


@dataclass(frozen=True)
class KeyFor:
    """A concurrency key evaluated (outside any transaction) for one version of an automation."""

    version_id: str
    value: str | None


class NeedsConcurrencyKey(Exception):
    """The automation limits concurrency: evaluate its key outside the transaction, then retry."""

    def __init__(
        self,
        loaded: LoadedDefinition,
        trigger_event: Mapping[str, Any],
        identity: Mapping[str, Any] | None,
    ) -> None:
        super().__init__("a concurrency key is needed")
        self.loaded = loaded
        self.trigger_event = trigger_event
        self.identity = identity

    def evaluate(self) -> KeyFor:
        """The key (user code, under a fresh budget); ``InvalidConcurrencyKey`` if it fails."""
        with sandbox.using(sandbox.Budget()):
            value = concurrency_key(self.loaded, self.trigger_event, self.identity)
        return KeyFor(self.loaded.version_id, value)


def start_run(db: Database, **kwargs: Any) -> tuple[dict[str, Any], bool]:
    """``trigger_run`` in its own transaction, its concurrency key evaluated first, outside it.

    Only automations with a ``concurrency`` key pay for a second transaction:
    the first finds that a key is needed and rolls back.
    """
    key: KeyFor | None = None
    for _ in range(3):  # the automation may change between two attempts
        try:
            with db.transaction() as conn:
                return trigger_run(conn, key=key, require_key=True, **kwargs)
        except NeedsConcurrencyKey as need:
            key = need.evaluate()
    with db.transaction() as conn:  # still changing: leave the key to the run's first round
        return trigger_run(conn, **kwargs)


def trigger_run(
    conn: Connection,
    *,
    tenant_id: str,
    automation_ref: str,
    payload: Mapping[str, Any] | None,
    identity: Mapping[str, Any] | None,
    idempotency_key: str | None,
    source_type: str,
    source_id: str | None,
    now: datetime,
    trigger_type: str = "manual",
    trigger_event: Mapping[str, Any] | None = None,
    key: KeyFor | None = None,
    require_key: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Start a run of the automation's current version.

    Returns the run summary and whether it was created (False: an earlier run
    with the same idempotency key is returned instead). No user code runs
    here: a concurrency key is ``key`` when it was evaluated for this version;
    otherwise, with ``require_key``, ``NeedsConcurrencyKey`` asks the caller to
    evaluate it outside the transaction (``start_run``), else the run's first
    round evaluates it.
    """
    automation = automation_store.get_automation(conn, tenant_id, automation_ref)
    if automation is None:
        raise AutomationNotFound(f"automation {automation_ref} not found")
    if idempotency_key is not None:
        existing = run_store.find_by_idempotency_key(
            conn, tenant_id, automation["id"], idempotency_key
        )
        if existing is not None:
            return run_summary(existing), False
    if not automation["enabled"]:
        raise AutomationDisabled(f"automation {automation['name']} is disabled")
    loaded = definitions.load(conn, automation["current_version_id"])
    contact_id = None
    if identity is not None:
        # The identity names the run's contact (created on first sight of an
        # email or external id); the run keeps the identity in its normal form.
        identity = parse_identity(identity).as_dict()
        contact_id = str(resolve_identity(conn, tenant_id, identity, now)["id"])
    event = trigger_event if trigger_event is not None else manual_event(payload, now)
    given = key is not None and key.version_id == loaded.version_id
    if require_key and loaded.definition.concurrency is not None and not given:
        raise NeedsConcurrencyKey(loaded, event, identity)
    launch = Launch(
        trigger_type=trigger_type,
        source_type=source_type,
        source_id=source_id,
        trigger_event=event,
        identity=identity,
        idempotency_key=idempotency_key,
        contact_id=contact_id,
        concurrency_key=key.value if key is not None and given else None,
    )
    run = create_run(
        conn, tenant_id=tenant_id, automation=automation, loaded=loaded, launch=launch, now=now
    )
    if run is None:
        # Lost a race with a concurrent request carrying the same key.
        assert idempotency_key is not None
        existing = run_store.find_by_idempotency_key(
            conn, tenant_id, automation["id"], idempotency_key
        )
        assert existing is not None
        return run_summary(existing), False
    return run_summary(run), True


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)


def run_summary(run: Row) -> dict[str, Any]:
    """The list view of a run: no step data."""
    return {
        "id": run["id"],
        "tenant_id": run["tenant_id"],
        "automation_id": run["automation_id"],
        "automation_name": run["automation_name"],
        "automation_version_id": run["version_id"],
        "version_number": run["version_number"],
        "status": run["status"],
        "trigger_type": run["trigger_type"],
        "trigger_source_type": run["trigger_source_type"],
        "trigger_source_id": run["trigger_source_id"],
        "identity": run["identity"],
        "concurrency_key": run["concurrency_key"],
        "idempotency_key": run["idempotency_key"],
        "retry_of": run["retry_of"],
        "root_run_id": run.get("root_run_id"),
        "parent_run_id": run.get("parent_run_id"),
        "contact_id": run.get("contact_id"),
        "dry_run": bool(run["dry_run"]),
        "orchestrator_type": "local",
        "error": run["error"],
        "created_at": iso(run["created_at"]),
        "started_at": iso(run["started_at"]),
        "completed_at": iso(run["completed_at"]),
        "updated_at": iso(run["updated_at"]),
        "duration_seconds": _duration(run["started_at"], run["completed_at"]),
    }


def run_summaries(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """``run_summary`` of each row of a run list (``run_queries.list_runs``), in one pass.

    The rows are tuples of ``run_queries.SUMMARY_COLUMNS`` with naive UTC
    times. A page holds up to 1,000 runs, so this is ``run_summary`` written
    for speed: each row unpacked once, the dict built from constant keys, each
    time written once (``updated_at`` is most often ``completed_at``), no
    call per value. The result is the same (a test holds the two equal).
    """
    out: list[dict[str, Any]] = []
    append = out.append
    for (
        run_id,
        tenant_id,
        automation_id,
        automation_name,
        version_id,
        version_number,
        status,
        trigger_type,
        trigger_source_type,
        trigger_source_id,
        identity,
        key_value,
        idempotency_key,
        retry_of,
        root_run_id,
        parent_run_id,
        contact_id,
        dry_run,
        error,
        created_at,
        started_at,
        completed_at,
        updated_at,
    ) in rows:
        completed = None if completed_at is None else completed_at.isoformat() + "Z"
        append(
            {
                "id": run_id,
                "tenant_id": tenant_id,
                "automation_id": automation_id,
                "automation_name": automation_name,
                "automation_version_id": version_id,
                "version_number": version_number,
                "status": status,
                "trigger_type": trigger_type,
                "trigger_source_type": trigger_source_type,
                "trigger_source_id": trigger_source_id,
                "identity": identity,
                "concurrency_key": key_value,
                "idempotency_key": idempotency_key,
                "retry_of": retry_of,
                "root_run_id": root_run_id,
                "parent_run_id": parent_run_id,
                "contact_id": contact_id,
                "dry_run": bool(dry_run),
                "orchestrator_type": "local",
                "error": error,
                # Naive UTC: isoformat() has no offset to strip.
                "created_at": created_at.isoformat() + "Z",
                "started_at": None if started_at is None else started_at.isoformat() + "Z",
                "completed_at": completed,
                # A finished run was last written when it finished: one string for both.
                "updated_at": completed
                if updated_at == completed_at
                else updated_at.isoformat() + "Z",
                "duration_seconds": None
                if started_at is None or completed_at is None
                else round((completed_at - started_at).total_seconds(), 6),
            }
        )
    return out


def _output_view(step: Row, inline_limit: int) -> dict[str, Any]:
    output = step["output"]
    size = step["output_size"]
    if output is None:
        return {"result": None, "result_truncated": False, "result_size": size or 0}
    if size is None:
        size = len(json.dumps(output, default=str))
    if size > inline_limit:
        return {"result": None, "result_truncated": True, "result_size": size}
    return {"result": output, "result_truncated": False, "result_size": size}


def _attempt_view(a: Row) -> dict[str, Any]:
    return {
        "attempt": a["attempt"],
        "status": a["status"],
        "worker_id": a["worker_id"],
        "started_at": iso(a["started_at"]),
        "ended_at": iso(a["ended_at"]),
        "duration_seconds": _duration(a["started_at"], a["ended_at"]),
        "error": a["error"],
    }


def step_views(conn: Connection, run: RowMapping, inline_limit: int) -> list[dict[str, Any]]:
    """Every step of a run with its attempts, dependencies and (bounded) output."""
    loaded = definitions.load(conn, run["version_id"])
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in run_store.get_attempts(conn, run["id"]):
        attempts.setdefault(a["step_key"], []).append(_attempt_view(a))
    out = []
    for s in run_store.get_steps(conn, run["id"]):
        deps = loaded.graph.deps.get(s["step_key"], ())
        step_def = loaded.definition.step(s["step_key"])
        out.append(
            {
                "id": s["id"],
                "key": s["step_key"],
                "name": step_def.name,
                "type": s["step_type"],
                "status": s["status"],
                "depends_on": [
                    d.step if d.branch is None else f"{d.step}.{d.branch}" for d in deps
                ],
                "branch_taken": s["branch_taken"],
                "halted": bool(s["halted"]),
                "skip_reason": s["skip_reason"],
                "reused_from": s["reused_from"],
                "attempt_count": s["attempts"],
                "attempts": attempts.get(s["step_key"], []),
                "next_attempt_at": iso(s["wake_at"]) if s["status"] == StepStatus.PENDING else None,
                "wake_at": iso(s["wake_at"]) if s["status"] == StepStatus.WAITING else None,
                "error": s["error"],
                "started_at": iso(s["started_at"]),
                "completed_at": iso(s["completed_at"]),
                "duration_seconds": _duration(s["started_at"], s["completed_at"]),
                **_output_view(s, inline_limit),
            }
        )
    return out


def wait_view(w: Row, step_ids: Mapping[str, str]) -> dict[str, Any]:
    """A wait as run detail shows it (seed 001's shape)."""
    event = None
    if w["resumed_by_event_id"] is not None:
        event = {
            "id": w["resumed_by_event_id"],
            "event_name": w["event_name_seen"],
            "occurred_at": iso(w["event_occurred_at"]),
        }
    return {
        "id": w["id"],
        "step_id": step_ids.get(w["step_key"]),
        "step_key": w["step_key"],
        "step_type": "wait_for_event",
        "waiting_for_event_name": w["event_name"],
        "status": w["status"],
        "resolved_identity_value": w["identity_value"],
        "contact_id": w["contact_id"],
        "match": w["match"],
        "started_at": iso(w["started_at"]),
        "timeout_at": iso(w["timeout_at"]),
        "resumed_at": iso(w["resumed_at"]),
        "timed_out_at": iso(w["timed_out_at"]),
        "outcome_branch": w["outcome_branch"],
        "resumed_by_event": event,
    }


def message_view(m: Row) -> dict[str, Any]:
    """A sent (or attempted) email or push notification, linked to its step."""
    view = {
        "id": m["id"],
        "run_id": m["run_id"],
        "channel": m["channel"],
        "status": m["status"],
        "last_event": m["last_event"],
        "automation_step_key": m["step_key"],
        "template_id": m["template_id"],
        "template_version_id": m["template_version_id"],
        "contact_id": m["contact_id"],
        "recipient": m["recipient"],
        "provider": m["provider"],
        "error": m["error"],
        "created_at": iso(m["created_at"]),
        "sent_at": iso(m["sent_at"]),
    }
    view["subject" if m["channel"] == "email" else "title"] = m["subject"]
    return view


def _output_message_ids(step: Mapping[str, Any]) -> list[str]:
    result = step.get("result")
    ids = result.get("message_ids") if isinstance(result, dict) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _attach_waits_and_messages(conn: Connection, detail: dict[str, Any]) -> None:
    steps = detail["steps"]
    step_ids = {s["key"]: s["id"] for s in steps}
    waits = [wait_view(w, step_ids) for w in run_store.get_waits(conn, detail["id"])]
    rows = list(run_store.get_messages(conn, detail["id"]))
    # A send step that found its message already sent in the run's lineage (a
    # retry or replay) reuses it: the message belongs to the earlier run, and
    # is shown here too, through the ids in the step's output.
    referenced = {i for step in steps for i in _output_message_ids(step)}
    referenced -= {str(m["id"]) for m in rows}
    if referenced:
        rows += message_store.get_messages(conn, referenced)
        rows.sort(key=lambda m: (m["created_at"], str(m["id"])))
    msgs = [message_view(m) for m in rows]
    for step in steps:
        if step["type"] == "wait_for_event":
            step["waits"] = [w for w in waits if w["step_key"] == step["key"]]
        mine = [m for m in msgs if m["automation_step_key"] == step["key"]]
        if step["type"] == "send_email_template" or any(m["channel"] == "email" for m in mine):
            step["linked_emails"] = [m for m in mine if m["channel"] == "email"]
        if step["type"] == "send_push_template" or any(m["channel"] == "push" for m in mine):
            step["linked_push_notifications"] = [m for m in mine if m["channel"] == "push"]
    detail["waits"] = waits
    detail["sent_emails"] = [m for m in msgs if m["channel"] == "email"]
    detail["sent_push_notifications"] = [m for m in msgs if m["channel"] == "push"]


def get_run_detail(
    conn: Connection, tenant_id: str, run_id: str, inline_limit: int = 65_536
) -> dict[str, Any]:
    """The run with its trigger event, identity, steps and attempts, and last error."""
    run = run_store.get_run(conn, run_id, tenant_id)
    if run is None:
        raise RunNotFound(f"run {run_id} not found")
    detail = run_summary(run)
    detail["trigger_event"] = run["trigger_event"]
    detail["retried_by"] = run_store.retried_by(conn, run_id)
    detail["timeout_at"] = iso(run["timeout_at"])
    detail["last_error"] = run["error"]
    detail["steps"] = step_views(conn, run, inline_limit)
    _attach_waits_and_messages(conn, detail)
    return detail
