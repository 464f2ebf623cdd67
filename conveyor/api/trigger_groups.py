"""Triggers that arrive while others are being written wait and are written together.

Each ``POST /automations/{id}/trigger`` hands its run to ``TriggerGroups``
and awaits the answer. On each event loop one task at a time writes: it takes
every trigger waiting (up to ``MAX_GROUP``), starts their runs in one thread
hop and one transaction (``conveyor.services.grouped_triggers``), answers each
request, and takes the next group if more arrived meanwhile. A lone request
is written at once, as before; under load, the requests that arrive during one
write share the next. That takes the per-request transaction, statements and
thread hop out of a busy server, for the server and for the database.

A trigger whose automation has a ``concurrency`` key is started on its own by
its request (``start_run``), so the user code of its key never holds up the
group. The group's task runs in a context of its own: its log lines carry no
request's id or tenant.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import weakref
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from conveyor.clock import Clock
from conveyor.services.grouped_triggers import ALONE, Outcome, Started, Trigger, start_runs
from conveyor.services.runs import start_run
from conveyor.store.db import Database

# The most triggers one transaction writes (as many as a batch trigger may hold).
MAX_GROUP = 1000

_Waiting = tuple[Trigger, "asyncio.Future[Outcome]"]


@dataclass
class _Loop:
    """The triggers waiting on one event loop, and whether its writer is busy."""

    waiting: list[_Waiting] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None  # while it writes


class TriggerGroups:
    """Start single triggers' runs, those that arrive together in one transaction."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # Per event loop: a test client may run each request on a loop of its own.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = (
            weakref.WeakKeyDictionary()
        )

    async def start(self, trigger: Trigger) -> Started:
        """The trigger's run summary and whether it was created; raises its error."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _Loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        state.waiting.append((trigger, future))
        if state.writer is None:
            # A context of its own: not the log context of the request that woke it.
            state.writer = loop.create_task(self._write(state), context=contextvars.Context())
        outcome = await future
        if outcome is ALONE:
            return await anyio.to_thread.run_sync(self._alone, trigger)
        if isinstance(outcome, BaseException):
            raise _own(outcome)
        assert isinstance(outcome, tuple)
        return outcome

    async def _write(self, state: _Loop) -> None:
        """Write the waiting triggers, group after group, until none is left."""
        try:
            while state.waiting:
                group = state.waiting[:MAX_GROUP]
                del state.waiting[:MAX_GROUP]
                await self._write_group(group)
        finally:
            state.writer = None
            # Left only when the loop is shutting down (the task cancelled): no
            # one will write these, so their requests end rather than hang.
            for _, future in state.waiting:
                future.cancel()
            state.waiting.clear()

    async def _write_group(self, group: list[_Waiting]) -> None:
        triggers = [t for t, _ in group]
        try:
            outcomes: list[Any] = await anyio.to_thread.run_sync(
                start_runs, self.db, triggers, self.clock.now()
            )
        except Exception as exc:  # the transaction failed: every request fails with it
            outcomes = [exc] * len(group)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():  # its request may have been cancelled (client gone)
                future.set_result(outcome)

    def _alone(self, trigger: Trigger) -> Started:
        # A trigger's fields are start_run's keyword arguments, name for name.
        return start_run(self.db, **vars(trigger), now=self.clock.now())


def _own(exc: BaseException) -> BaseException:
    """A copy of an error for one request, so requests never share one exception and traceback.

    A failure of the group's transaction, or of an automation's triggers, is
    one exception given to several requests.
    """
    try:
        clone = copy.copy(exc)
    except Exception:  # an exception that cannot be copied is raised as it is
        return exc
    clone.__cause__, clone.__context__ = exc.__cause__, exc.__context__
    return clone.with_traceback(exc.__traceback__)
