"""Child runs: starting one for a ``trigger_automation`` step, and waking the parent at its end.

The child carries ``parent_run_id`` and, in its trigger event, the parent's
step key; when the child's last round ends it (``_finish`` in
``conveyor.engine.rounds``), ``wake_parent`` makes that step due, and the
step reads the child's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from conveyor.actions import trigger_automation
from conveyor.actions.base import StepError
from conveyor.actions.wait_for_event import existing_contact
from conveyor.domain.errors import ConveyorError
from conveyor.domain.times import iso
from conveyor.engine.launch import Launch, create_run
from conveyor.engine.wake import wake_step
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store import runs as run_store

# Automations that trigger each other (or themselves) stop here rather than loop.
MAX_DEPTH = 10


def _depth(run: Mapping[str, Any]) -> int:
    """How many parents the run has above it."""
    if run.get("parent_run_id") is None:
        return 0
    parent = (run.get("trigger_event") or {}).get("parent") or {}
    return int(parent.get("depth", 1))


def launch_child(
    conn: Connection,
    *,
    parent: Mapping[str, Any],
    step_key: str,
    automation: str,
    payload: Mapping[str, Any],
    identity: Mapping[str, Any] | None,
    idempotency_key: str,
    now: datetime,
) -> Mapping[Any, Any]:
    """Create the child run of a parent's step, in the parent round's transaction.

    Without an ``identity`` the child is about the parent's contact. Raises
    ``StepError`` (not retryable) when the automation is unknown or disabled,
    or the chain of parents is too deep.
    """
    tenant_id = parent["tenant_id"]
    target = automation_store.get_automation(conn, tenant_id, automation)
    if target is None:
        raise StepError(
            f"automation {automation!r} not found", retryable=False, code="automation_not_found"
        )
    if not target["enabled"]:
        raise StepError(
            f"automation {target['name']!r} is disabled",
            retryable=False,
            code="automation_disabled",
        )
    depth = _depth(parent) + 1
    if depth > MAX_DEPTH:
        raise StepError(
            f"child runs nest at most {MAX_DEPTH} deep",
            retryable=False,
            code="child_depth_exceeded",
        )
    if identity is None:
        identity, contact_id = parent.get("identity"), parent.get("contact_id")
    else:
        contact_id, _ = existing_contact(conn, tenant_id, identity)
    event = {
        "id": None,
        "name": None,
        "payload": dict(payload),
        "occurred_at": iso(now),
        "parent": {
            "run_id": parent["id"],
            "step_key": step_key,
            "automation_name": parent.get("automation_name"),
            "depth": depth,
        },
    }
    launch = Launch(
        trigger_type="automation",
        source_type="automation",
        source_id=parent["id"],
        trigger_event=event,
        identity=identity,
        idempotency_key=idempotency_key,
        contact_id=contact_id,
        parent_run_id=parent["id"],
    )
    loaded = definitions.load(conn, target["current_version_id"])
    try:
        run = create_run(
            conn, tenant_id=tenant_id, automation=target, loaded=loaded, launch=launch, now=now
        )
    except ConveyorError as exc:  # e.g. the child's concurrency key does not evaluate
        raise StepError(exc.detail, retryable=False, code=exc.code) from exc
    if run is None:  # the key was taken: this step started it already
        existing = run_store.find_by_idempotency_key(conn, tenant_id, target["id"], idempotency_key)
        assert existing is not None
        return existing
    return run


def wake_parent(conn: Connection, run: Mapping[str, Any], now: datetime) -> str | None:
    """A child run ended: wake the parent's step waiting for it (if it waits).

    Returns the id of the parent it woke, if any.
    """
    parent_id = run.get("parent_run_id")
    if parent_id is None:
        return None
    step_key = ((run.get("trigger_event") or {}).get("parent") or {}).get("step_key")
    if step_key and wake_step(conn, run["tenant_id"], parent_id, step_key, now):
        return str(parent_id)
    return None


trigger_automation.use_launcher(launch_child)
