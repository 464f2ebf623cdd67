"""Running one external step attempt on the worker's event loop, outside any transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import httpx

from conveyor import logs
from conveyor.actions.base import ActionResult, StepError
from conveyor.engine.round_state import Outcome
from conveyor.engine.steps import Prepared
from conveyor.settings import Settings
from conveyor.store.db import Database

log = logging.getLogger("conveyor.worker")


async def run_attempt(
    prepared: Prepared,
    *,
    http: httpx.AsyncClient | None,
    db: Database,
    settings: Settings,
    now: Callable[[], datetime],
) -> Outcome:
    """Execute the attempt under its timeout; its outcome, never an exception (but cancellation).

    A timeout is ``step_timeout``; a ``StepError`` is the step's own failure;
    any other exception is an action bug, logged and recorded as ``action_error``.
    """
    # Each attempt is a task of its own (gather), so this binding ends with it.
    logs.bind(**prepared.log_fields())
    prepared.ctx.http = http
    prepared.ctx.db = db
    prepared.ctx.app = settings
    started = now()
    try:
        coro = prepared.action.execute(prepared.ctx)
        if prepared.timeout is not None:
            result: ActionResult = await asyncio.wait_for(coro, prepared.timeout)
        else:
            result = await coro
        return Outcome(prepared.key, prepared.attempt, started, now(), result=result)
    except TimeoutError:
        err = StepError(f"step timed out after {prepared.timeout} s", code="step_timeout")
    except StepError as exc:
        err = exc
    except Exception as exc:  # an action bug must not kill the run silently
        log.exception("step %s raised", prepared.key)
        err = StepError(f"{type(exc).__name__}: {exc}", code="action_error")
    return Outcome(prepared.key, prepared.attempt, started, now(), error=err)
