"""Controlling runs from outside: cancel, retry (and replay), each in the caller's transaction.

A retry never touches the original run beyond a history line: it creates a
new run linked by ``retry_of`` whose reused steps carry ``reused_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection

from conveyor.domain.errors import AutomationNotFound, Conflict, ConveyorError, RunNotFound
from conveyor.domain.status import CANCELLABLE_RUN_STATUSES, RunStatus
from conveyor.engine import metering
from conveyor.engine.batch import end_run
from conveyor.engine.launch import Launch, create_run, reusable_steps
from conveyor.engine.round_state import Limits, Round
from conveyor.engine.rounds import log_end, terminate
from conveyor.store import automations as automation_store
from conveyor.store import definitions
from conveyor.store import rounds as round_store
from conveyor.store import runs as run_store
from conveyor.store import tasks as task_store
from conveyor.store.definitions import LoadedDefinition

RetryMode = Literal["from_failed", "from_step", "full"]
# Statuses a replay (from_failed) can do something about.
REPLAYABLE_RUN_STATUSES = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.EXHAUSTED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.COMPLETED_WITH_ERRORS,
    }
)


class RunNotCancellable(Conflict):
    """Only pending, running and waiting runs can be cancelled."""

    code = "run_not_cancellable"


class RunNotRetryable(Conflict):
    """The run cannot be retried in this way now."""

    code = "run_not_retryable"


class InvalidRetry(ConveyorError):
    """The retry request does not fit the run."""

    code = "invalid_retry"


@dataclass(frozen=True)
class Actor:
    """Who asked: written into the history of every run a control touches."""

    kind: str  # "api_key" or "user"
    id: str | None
    label: str | None = None

    def as_data(self) -> dict[str, Any]:
        """The actor as a history line's data."""
        return {"actor_type": self.kind, "actor_id": self.id, "actor_label": self.label}


def _clock(now: datetime) -> Any:
    return lambda: now


def cancel_run(
    conn: Connection,
    tenant_id: str,
    run_id: str,
    *,
    actor: Actor,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Cancel a pending, running or waiting run; return the run row after the change.

    The run's tasks are locked first and its row second, the same order a
    worker's round takes them, so the two cannot deadlock; deleting the tasks
    fences out any worker mid-round, and workers are told to abort the run's
    in-flight calls.
    """
    task_store.lock_run_tasks(conn, run_id)
    run = round_store.load_runs(conn, [run_id]).get(run_id)
    if run is None or run["tenant_id"] != tenant_id:
        raise RunNotFound(f"run {run_id} not found")
    if RunStatus(run["status"]) not in CANCELLABLE_RUN_STATUSES:
        raise RunNotCancellable(
            f"run {run_id} is {run['status']}; only pending, running "
            "and waiting runs can be cancelled"
        )
    loaded = definitions.load(conn, run["version_id"])
    steps = round_store.load_steps(conn, [run_id])[run_id]
    limits = Limits(worker_id=actor.id or "api", lease=timedelta(0), max_output_bytes=0)
    rnd = Round(run, loaded, steps, _clock(now), limits, "")
    terminate(rnd, RunStatus.CANCELLED, now, why="run cancelled", reason=reason, **actor.as_data())
    end_run(conn, rnd, now)  # no user code: waits closed, parent woken, slot handed on
    rnd.flush()
    round_store.flush(conn, rnd.w)
    task_store.announce_cancel(conn, run_id)
    # Counted before the request's commit: a cancel whose commit then fails
    # (rare: the database went away in between) is counted all the same.
    metering.run_cancelled(rnd.run, loaded.definition.name)
    # Logged as the cancel is written: the request (or the bulk page) commits
    # right after, so a line for a cancel rolled back is rare; the run's
    # history stays the record.
    log_end(rnd.run)
    return rnd.run


def _retry_plan(
    mode: RetryMode,
    step_key: str | None,
    original: Mapping[Any, Any],
    loaded: LoadedDefinition,
    payload: Mapping[str, Any] | None,
) -> set[str]:
    """Which step keys of the new definition may reuse the original's results."""
    keys = {s.key for s in loaded.definition.steps}
    if payload is not None and mode != "full":
        raise InvalidRetry("`payload` is only accepted with mode `full`")
    if mode == "full":
        return set()
    if mode == "from_step":
        if not step_key:
            raise InvalidRetry("mode `from_step` needs `step_key`")
        if step_key not in keys:
            raise InvalidRetry(f"step {step_key!r} is not in the definition", field="step_key")
        return keys - {step_key} - loaded.graph.downstream(step_key)
    if step_key is not None:
        raise InvalidRetry("`step_key` is only accepted with mode `from_step`")
    if RunStatus(original["status"]) not in REPLAYABLE_RUN_STATUSES:
        raise RunNotRetryable(
            f"run {original['id']} is {original['status']}: nothing failed, so nothing "
            "to resume (use mode `full` to run it again)"
        )
    return keys


def retry_run(
    conn: Connection,
    tenant_id: str,
    run_id: str,
    *,
    mode: RetryMode,
    step_key: str | None,
    payload: Mapping[str, Any] | None,
    version: Literal["original", "latest"],
    resend: bool,
    reason: str | None,
    actor: Actor,
    now: datetime,
) -> dict[str, Any]:
    """Create a new run that retries ``run_id``; return the new run row."""
    original = run_store.get_run(conn, run_id, tenant_id)
    if original is None:
        raise RunNotFound(f"run {run_id} not found")
    if not RunStatus(original["status"]).terminal:
        raise RunNotRetryable(
            f"run {run_id} is still {original['status']}; wait for it to finish or cancel it first"
        )
    automation = automation_store.get_automation(conn, tenant_id, original["automation_id"])
    if automation is None:
        raise AutomationNotFound(f"automation {original['automation_name']} was deleted")
    version_id = (
        original["version_id"] if version == "original" else automation["current_version_id"]
    )
    loaded = definitions.load(conn, version_id)
    keep = _retry_plan(mode, step_key, original, loaded, payload)
    old_steps = run_store.get_steps(conn, run_id)
    # With version `latest` a step may have changed type: only the same step is reused.
    new_types = {s.key: s.type for s in loaded.definition.steps}
    same = {s["step_key"] for s in old_steps if new_types.get(s["step_key"]) == s["step_type"]}
    reused = reusable_steps(old_steps, keep & same)
    event = dict(original["trigger_event"])
    if payload is not None:
        event["payload"] = dict(payload)
    details = {
        "retry_of": run_id,
        "mode": mode,
        "step_key": step_key,
        "version": version,
        "resend": resend,
        "reason": reason,
        **actor.as_data(),
    }
    run = create_run(
        conn,
        tenant_id=tenant_id,
        automation=automation,
        loaded=loaded,
        now=now,
        launch=Launch(
            trigger_type="retry",
            source_type=actor.kind,
            source_id=actor.id,
            trigger_event=event,
            identity=original["identity"],
            retry_of=run_id,
            root_run_id=original["root_run_id"] or run_id,
            resend=resend,
            contact_id=original["contact_id"],
            reused=reused,
            created_data=details,
        ),
    )
    assert run is not None  # no idempotency key, so no conflict
    run_store.append_events(
        conn,
        run_id=run_id,
        tenant_id=tenant_id,
        events=[
            {
                "type": "run.retried",
                "created_at": now,
                "data": {"retry_run_id": run["id"], **details},
            }
        ],
    )
    return run
