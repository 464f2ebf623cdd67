"""The action contract: every step type is an action with ``execute`` and ``simulate``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Connection

    from conveyor.domain.definition import StepDef
    from conveyor.settings import Settings
    from conveyor.store.db import Database


class StepError(Exception):
    """A step attempt failed. ``retryable=False`` means no retry can help."""

    code = "step_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        if code:
            self.code = code
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The error as stored on the attempt and the step."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class RetryableError(StepError):
    """Ask for a retry, optionally after a specific delay (like arq's ``Retry(defer=...)``)."""

    code = "retry_requested"

    def __init__(self, message: str, *, delay: timedelta | None = None, **kw: Any) -> None:
        super().__init__(message, retryable=True, **kw)
        self.delay = delay


@dataclass
class ActionContext:
    """Everything an action sees while it runs one attempt of one step."""

    step: StepDef
    settings: BaseModel  # the step's settings, templates already rendered
    scope: dict[str, Any]  # expression context: trigger, identity, contact, steps, vars, run, now
    now: datetime
    attempt: int = 1
    resumed: bool = False  # True when a parked step (a delay) is woken up
    wake_at: datetime | None = None  # the time a parked step asked to be woken
    http: httpx.AsyncClient | None = None
    # The run row (id, tenant_id, contact_id, root_run_id, resend, ...).
    run: Mapping[str, Any] = field(default_factory=dict)
    # Inline actions get the round's own transaction; they must only write
    # rows of their own run (a wait row, say), and never commit.
    conn: Connection | None = None
    # External actions get the database for their own short transactions (a
    # message row written `sending` before the provider call), and the settings.
    db: Database | None = None
    app: Settings | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionResult:
    """What an attempt produced.

    ``park_until`` parks the step (status ``waiting``) until that time, after
    which ``execute`` is called again with ``resumed=True``; ``park`` parks it
    with no time, until ``conveyor.engine.wake.wake_step`` is called for it.
    """

    output: Any = None
    branch: str | None = None
    halt: bool = False
    park_until: datetime | None = None
    # Park even without a time: something else (an event, a child run) wakes the step.
    park: bool = False


class Action(Protocol):
    """A step type."""

    step_type: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    branches: ClassVar[frozenset[str]]
    # Fields rendered lazily by the action itself rather than up front.
    raw_fields: ClassVar[frozenset[str]]
    # Inline actions are pure and fast: the engine runs them inside its
    # transaction with ``execute_inline`` instead of a separate round trip.
    inline: ClassVar[bool]

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Do the work for real."""
        ...

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Say what ``execute`` would do, without side effects (dry runs)."""
        ...

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """``execute`` for inline actions, synchronously."""
        ...
