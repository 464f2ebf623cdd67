"""Controlling runs from outside: cancel, retry (and replay), each in the caller's transaction.

A retry never touches the original run beyond a history line: it creates a
new run linked by ``retry_of`` whose reused steps carry ``reused_from``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import (
    AutomationNotFound,
    Conflict,
    ConveyorError,
    NotFound,
    RunNotFound,
)
from conveyor.domain.ids import looks_like_id
from conveyor.domain.status import CANCELLABLE_RUN_STATUSES, RunStatus
from conveyor.engine import metering
from conveyor.engine.batch import end_run
from conveyor.engine.launch import Launch, NewRun, create_runs, reusable_steps
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
    """Create a new run that retries ``run_id``; return the new run row.

    ``retry_runs`` with one run: raises the error that refuses it.
    """
    (result,) = retry_runs(
        conn,
        tenant_id,
        [run_id],
        mode=mode,
        step_key=step_key,
        payload=payload,
        version=version,
        resend=resend,
        reason=reason,
        actor=actor,
        now=now,
    )
    if isinstance(result, ConveyorError):
        raise result
    return result


@dataclass(frozen=True)
class _Planned:
    """A run that can be retried: what it was, and what its retry starts from."""

    run_id: str
    original: RowMapping
    automation: RowMapping
    loaded: LoadedDefinition
    keep: set[str]


def retry_runs(
    conn: Connection,
    tenant_id: str,
    run_ids: Sequence[str],
    *,
    mode: RetryMode,
    step_key: str | None,
    payload: Mapping[str, Any] | None,
    version: Literal["original", "latest"],
    resend: bool,
    reason: str | None,
    actor: Actor,
    now: datetime,
) -> list[dict[str, Any] | ConveyorError]:
    """Retry each of ``run_ids`` (distinct) as ``retry_run`` would, in a fixed number of statements.

    Returns, run by run, the new run row or the error refusing that run (not
    found, not finished, automation deleted, nothing to resume, a request that
    does not fit it). Refusals are decided before anything is written, so a
    refused run changes nothing and does not stop the others. The originals,
    their automations, versions and steps are each read in one statement
    (definitions the process has parsed are not read again), the new runs are
    written by ``create_runs`` and the originals' ``run.retried`` lines by
    ``append_event_each``.
    """
    if len(set(run_ids)) != len(run_ids):
        raise ValueError("retry_runs takes distinct run ids")
    errors: dict[str, ConveyorError] = {}
    # Rows come back with canonical ids; callers usually pass them so already.
    canonical = {r: str(UUID(r)) for r in run_ids if looks_like_id(r)}
    originals = round_store.load_runs(conn, sorted(set(canonical.values())), lock=False)
    finished: dict[str, RowMapping] = {}
    for run_id in run_ids:
        original = originals.get(canonical.get(run_id, ""))
        if original is None or original["tenant_id"] != tenant_id:
            errors[run_id] = RunNotFound(f"run {run_id} not found")
        elif not RunStatus(original["status"]).terminal:
            errors[run_id] = RunNotRetryable(
                f"run {run_id} is still {original['status']}; "
                "wait for it to finish or cancel it first"
            )
        else:
            finished[run_id] = original
    automations = automation_store.get_automations(
        conn, tenant_id, {str(o["automation_id"]) for o in finished.values()}
    )
    versions: dict[str, str] = {}
    for run_id, row in finished.items():
        automation = automations.get(str(row["automation_id"]))
        if automation is None:
            errors[run_id] = AutomationNotFound(f"automation {row['automation_name']} was deleted")
        elif version == "original":
            versions[run_id] = str(row["version_id"])
        else:
            versions[run_id] = str(automation["current_version_id"])
    loaded = definitions.load_many(conn, versions.values())
    planned: list[_Planned] = []
    for run_id, version_id in versions.items():
        row = finished[run_id]
        if version_id not in loaded:
            errors[run_id] = NotFound(f"automation version {version_id} not found")
            continue
        try:
            keep = _retry_plan(mode, step_key, row, loaded[version_id], payload)
        except ConveyorError as exc:
            errors[run_id] = exc
            continue
        automation = automations[str(row["automation_id"])]
        planned.append(_Planned(run_id, row, automation, loaded[version_id], keep))
    old_steps = round_store.load_steps(conn, [p.run_id for p in planned])
    details = {
        p.run_id: {
            "retry_of": p.run_id,
            "mode": mode,
            "step_key": step_key,
            "version": version,
            "resend": resend,
            "reason": reason,
            **actor.as_data(),
        }
        for p in planned
    }
    items = [
        NewRun(
            p.automation,
            p.loaded,
            _retry_launch(p, old_steps[p.run_id], payload, resend, actor, details[p.run_id]),
        )
        for p in planned
    ]
    made: dict[str, dict[str, Any]] = {}
    for p, run in zip(
        planned, create_runs(conn, tenant_id=tenant_id, items=items, now=now), strict=True
    ):
        assert run is not None  # no idempotency key, so no conflict
        made[p.run_id] = run
    run_store.append_event_each(
        conn,
        tenant_id,
        {
            str(finished[run_id]["id"]): {
                "type": "run.retried",
                "created_at": now,
                "data": {"retry_run_id": run["id"], **details[run_id]},
            }
            for run_id, run in made.items()
        },
    )
    return [errors[run_id] if run_id in errors else made[run_id] for run_id in run_ids]


def _retry_launch(
    p: _Planned,
    old_steps: Sequence[RowMapping],
    payload: Mapping[str, Any] | None,
    resend: bool,
    actor: Actor,
    details: Mapping[str, Any],
) -> Launch:
    """How the retry of ``p`` starts: its original's trigger, lineage and reusable steps."""
    original = p.original
    # With version `latest` a step may have changed type: only the same step is reused.
    new_types = {s.key: s.type for s in p.loaded.definition.steps}
    same = {s["step_key"] for s in old_steps if new_types.get(s["step_key"]) == s["step_type"]}
    event = dict(original["trigger_event"])
    if payload is not None:
        event["payload"] = dict(payload)
    return Launch(
        trigger_type="retry",
        source_type=actor.kind,
        source_id=actor.id,
        trigger_event=event,
        identity=original["identity"],
        retry_of=p.run_id,
        root_run_id=original["root_run_id"] or p.run_id,
        resend=resend,
        contact_id=original["contact_id"],
        reused=reusable_steps(old_steps, p.keep & same),
        created_data=details,
    )
