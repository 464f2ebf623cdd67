"""Seed 003 (Sovrium): its names, statuses and error object, translated from Conveyor's.

Pure translation of what the services return (see docs/seeds/003.md): Sovrium
names fields in camelCase and knows fewer statuses than Conveyor, so each run
and step carries its Sovrium ``status`` and, as ``conveyorStatus``, the exact
one. Errors are ``{"error": {"code", "message", "status", "details"}}``, built
from the problem+json the app's own handlers give, so status, code and headers
(``WWW-Authenticate``, ``Retry-After``) stay those of ``/api/v1``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from conveyor.domain.status import RunStatus, StepStatus

# The document's run statuses, in its order.
SeedRunStatus = Literal[
    "pending",
    "running",
    "completed",
    "completed-with-errors",
    "failed",
    "timed-out",
    "exhausted",
    "cancelled",
]

SeedStepStatus = Literal["running", "completed", "failed", "skipped"]

# Conveyor's `waiting` run (parked on a delay or an event) is still in progress:
# Sovrium's `pending` is a run not yet started, so it shows as `running`.
_RUN_STATUS = {s.value: s.value for s in RunStatus} | {RunStatus.WAITING.value: "running"}

# The Conveyor statuses a Sovrium status filter covers.
RUNS_OF_STATUS: dict[str, tuple[RunStatus, ...]] = {
    "pending": (RunStatus.PENDING,),
    "running": (RunStatus.RUNNING, RunStatus.WAITING),
    "completed": (RunStatus.COMPLETED,),
    "completed-with-errors": (RunStatus.COMPLETED_WITH_ERRORS,),
    "failed": (RunStatus.FAILED,),
    "timed-out": (RunStatus.TIMED_OUT,),
    "exhausted": (RunStatus.EXHAUSTED,),
    "cancelled": (RunStatus.CANCELLED,),
}

# A `waiting` step (a delay, a wait for an event) is executing from the run's
# point of view; a `cancelled` one was stopped by a cancel and is "not run".
# `pending` steps have no Sovrium status: they are listed in `pendingStepKeys`.
_STEP_STATUS = {
    StepStatus.RUNNING.value: "running",
    StepStatus.WAITING.value: "running",
    StepStatus.COMPLETED.value: "completed",
    StepStatus.FAILED.value: "failed",
    StepStatus.SKIPPED.value: "skipped",
    StepStatus.CANCELLED.value: "skipped",
}


def run_status(status: str) -> str:
    """A Conveyor run status as Sovrium names it."""
    return _RUN_STATUS.get(status, status)


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A run summary (``services.runs.run_summary``) in Sovrium's names."""
    return {
        "id": run["id"],
        "automationId": run["automation_id"],
        "automationName": run["automation_name"],
        "automationVersion": run["version_number"],
        "status": run_status(run["status"]),
        "conveyorStatus": run["status"],
        "triggerType": run["trigger_type"],
        "replayOf": run["retry_of"],
        "dryRun": run["dry_run"],
        "error": run["error"],
        "createdAt": run["created_at"],
        "startedAt": run["started_at"],
        "completedAt": run["completed_at"],
        "updatedAt": run["updated_at"],
        "durationSeconds": run["duration_seconds"],
    }


def step_view(step: dict[str, Any]) -> dict[str, Any]:
    """One started or settled step (``services.runs.step_views``) in Sovrium's names."""
    return {
        "id": step["id"],
        "key": step["key"],
        "name": step["name"],
        "type": step["type"],
        "status": _STEP_STATUS[step["status"]],
        "conveyorStatus": step["status"],
        "output": step["result"],
        "outputTruncated": step["result_truncated"],
        "outputSize": step["result_size"],
        "error": step["error"],
        "skipReason": step["skip_reason"],
        "reusedFrom": step["reused_from"],
        "attempts": step["attempt_count"],
        "startedAt": step["started_at"],
        "completedAt": step["completed_at"],
        "durationSeconds": step["duration_seconds"],
    }


def detail_view(detail: dict[str, Any]) -> dict[str, Any]:
    """A run detail (``services.runs.get_run_detail``) in Sovrium's names."""
    event = detail["trigger_event"]
    payload = event.get("payload") if isinstance(event, dict) else None
    steps = detail["steps"]
    return {
        **run_view(detail),
        "triggerPayload": payload,
        "triggerEvent": event,
        "timeoutAt": detail["timeout_at"],
        "replayedBy": detail["retried_by"],
        "steps": [step_view(s) for s in steps if s["status"] != StepStatus.PENDING],
        "pendingStepKeys": [s["key"] for s in steps if s["status"] == StepStatus.PENDING],
    }


def page_view(page: dict[str, Any]) -> dict[str, Any]:
    """A run page (``services.run_lists.list_runs``): ``{runs, pagination}``."""
    return {
        "runs": [run_view(r) for r in page["items"]],
        "pagination": {
            "total": page["total"],
            "totalExact": page["total_exact"],
            "limit": page["limit"],
            "offset": page["offset"],
            "hasMore": page["next_cursor"] is not None,
            "nextCursor": page["next_cursor"],
        },
    }


def _field(loc: list[Any]) -> str:
    return ".".join(str(p) for p in loc)


def from_problem(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    """A problem+json body, as Sovrium's error object."""
    error: dict[str, Any] = {
        "code": problem.get("code"),
        "message": problem.get("detail", ""),
        "status": status,
    }
    if isinstance(problem.get("errors"), list):
        error["details"] = [
            {"field": _field(e.get("loc", [])), "message": e.get("msg", ""), "type": e.get("type")}
            for e in problem["errors"]
        ]
    return {"error": error}


def error_response(problem: Response) -> Response:
    """The app's problem+json answer, as Sovrium's error object (same status and headers)."""
    try:
        body = json.loads(bytes(problem.body))
    except ValueError:
        return problem
    if not isinstance(body, dict) or "code" not in body:
        return problem
    headers = {
        k: v
        for k, v in problem.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return JSONResponse(
        from_problem(problem.status_code, body), status_code=problem.status_code, headers=headers
    )


async def answer_error(request: Request, exc: Exception) -> Response | None:
    """The app's own handler's answer to ``exc``, in Sovrium's shape; None if it has none."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return error_response(await handler(request, exc))
    return None
