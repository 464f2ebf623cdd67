"""The action contract: every step type is an action with ``execute`` and ``simulate``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

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


@dataclass(frozen=True)
class WaitDecision:
    """A wait's compare-and-set, made when the round commits.

    The round was evaluated assuming it wins; if the wait was decided
    otherwise meanwhile (an event, a timeout), the round's changes to the run
    are dropped and the run is advanced again from what is now stored.
    """

    wait_id: str
    outcome: Literal["timed_out", "received"]
    event_id: str | None = None


# ``Deferred.apply`` may return this: the step must be resumed at once (it has
# something to look at again), and its run advanced again.
WAKE: Final = "wake"


@dataclass(frozen=True)
class Deferred:
    """Database work of an inline step, done in the round's commit; no user code runs in it.

    ``apply(conn)`` returns the step's result when only the database can tell
    it (the child run a ``trigger_automation`` step started; the step then
    reported ``ActionResult(deferred=True)``), ``WAKE``, or None when the result
    the step reported while evaluated stands.
    """

    apply: Callable[[Connection], ActionResult | StepError | Literal["wake"] | None]


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
    # Dry-run simulations read templates through this; the engine evaluates
    # inline steps with no transaction open and leaves it None.
    conn: Connection | None = None
    # External actions get the database for their own short transactions (a
    # message row written `sending` before the provider call), and the settings.
    db: Database | None = None
    app: Settings | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # What an inline step asks of the round's commit (see WaitDecision, Deferred).
    decisions: list[WaitDecision] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)


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
    # The result is known only once the round commits (``Deferred``): the step
    # stays running until then.
    deferred: bool = False


class Action(Protocol):
    """A step type."""

    step_type: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    branches: ClassVar[frozenset[str]]
    # Fields rendered lazily by the action itself rather than up front.
    raw_fields: ClassVar[frozenset[str]]
    # Inline actions are pure and fast: the engine evaluates them in the round
    # itself (``execute_inline``, with no transaction open) instead of a
    # separate attempt; the database work they need goes to the round's commit.
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
