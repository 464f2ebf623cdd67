"""``wait_for_event``: park the step until a matching event arrives or the timeout passes.

Inline, and evaluated with no transaction open: the round hands the step what
it read (the wait row, ``extra["wait"]``, and for a wait woken to look again
the stored events of its window, ``extra["window"]``), and the step leaves
its database work to the round's commit.

- **Start.** The step parks until ``timeout_at`` (or with no time), and asks
  the commit to write the wait row. With a ``lookback``, or when an event for
  it was stored while the round was evaluated (the commit looks), the commit
  wakes the step at once to *look again*.
- **Look again.** Woken while its wait is still open and its time has not
  come, the step evaluates ``match`` over the window's stored events (from
  ``lookback_from`` on); the first that matches decides the wait ``received``,
  else the step parks again.
- **Decided.** Delivery of an event (``conveyor.engine.waits.deliver_event``)
  decides the wait ``received`` and wakes the step; the step resumed at
  ``timeout_at`` decides it ``timed_out``.

Every decision is one compare-and-set on the wait row (``WaitDecision``), so
exactly one wins; a round whose decision lost is redone from what won.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection

from conveyor.actions.base import (
    WAKE,
    ActionContext,
    ActionResult,
    Deferred,
    StepError,
    WaitDecision,
)
from conveyor.domain.contacts import parse_identity
from conveyor.domain.errors import (
    ConveyorError,
    ExpressionError,
    ExpressionTimeout,
    ExpressionTooLarge,
)
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.ids import new_id
from conveyor.domain.times import Duration, iso
from conveyor.store import contacts as contact_store
from conveyor.store import waits as wait_store

RECEIVED: Final = "received"
TIMED_OUT: Final = "timed_out"


class WaitForEventSettings(BaseModel):
    """Settings of `wait_for_event`: what to wait for (branches `received`, `timed_out`).

    How long is the step's common `timeout` field (absent: until an event
    comes). Only events about the run's contact count (for a run without a
    contact, its identity's value; a run with neither hears every such event).
    """

    model_config = ConfigDict(extra="forbid")
    event: str = Field(
        min_length=1, max_length=200, description="the name of the event to wait for"
    )
    match: str | None = Field(
        None,
        description="a bare expression over `event` and the run's scope; the first event for "
        "which it is true completes the wait (one it cannot be evaluated for does not match). "
        "Absent: any event of that name",
        examples=["event.payload.order_id == trigger.payload.order_id"],
    )
    lookback: Duration | None = Field(
        None,
        description="also take events that occurred up to this long before the wait started: "
        "an ISO 8601 duration (a number is read as seconds), not negative",
        examples=["PT1M"],
    )

    @model_validator(mode="after")
    def _durations(self) -> WaitForEventSettings:
        if self.lookback is not None and self.lookback < timedelta(0):
            raise PydanticCustomError("invalid_setting", "`lookback` cannot be negative")
        return self


def event_output(event: Mapping[Any, Any]) -> dict[str, Any]:
    """The event as the step's output (and as ``event`` in ``match``)."""
    occurred = event["occurred_at"]
    return {
        "id": event["id"],
        "name": event["name"],
        "identity": event.get("identity"),
        "contact_id": event.get("contact_id"),
        "payload": event.get("payload") or {},
        "occurred_at": iso(occurred) if isinstance(occurred, datetime) else occurred,
    }


def existing_contact(
    conn: Connection, tenant_id: str, identity: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """The id of the existing contact an identity names (none is created), and its value.

    The value is normalised as events store it (a lowercased email), so a
    run without a contact still meets the events of its identity.
    """
    if identity.get("value") is None:
        return None, None
    try:
        ref = parse_identity(identity)
    except ConveyorError:
        return None, str(identity["value"])
    if ref.type == "email":
        found = contact_store.find_by_emails(conn, tenant_id, [ref.value]).get(ref.value)
    elif ref.type == "external_id":
        found = contact_store.find_by_external_ids(conn, tenant_id, [ref.value]).get(ref.value)
    else:
        found = contact_store.get_contact(conn, tenant_id, ref.value)
    return (str(found["id"]) if found is not None else None), ref.value


def _history(ctx: ActionContext, type_: str, **data: Any) -> None:
    """A line for the run's history, written by the round with the step's own lines."""
    ctx.extra.setdefault("history", []).append((type_, data))


class WaitForEventAction:
    """Wait, durably, for an event about the run's contact."""

    step_type: ClassVar[str] = "wait_for_event"
    settings_model: ClassVar[type[BaseModel]] = WaitForEventSettings
    branches: ClassVar[frozenset[str]] = frozenset({RECEIVED, TIMED_OUT})
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = True

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Same as ``execute_inline``."""
        return self.execute_inline(ctx)

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Start waiting, or, once resumed, report what decided the wait (or decide it)."""
        wait: Mapping[str, Any] | None = ctx.extra.get("wait")
        if wait is None:
            return self._start(ctx)
        status = wait["status"]
        if status != wait_store.WAITING:
            return self._settled(ctx, wait)
        timeout_at = wait["timeout_at"]
        if timeout_at is not None and timeout_at <= ctx.now:
            ctx.decisions.append(WaitDecision(str(wait["id"]), TIMED_OUT))
            _history(ctx, "wait.timed_out", wait_id=wait["id"], timeout_at=iso(timeout_at))
            return ActionResult(
                output={"timed_out_at": iso(ctx.now), "timeout_at": iso(timeout_at)},
                branch=TIMED_OUT,
            )
        return self._look_again(ctx, wait)

    # -- first execution -------------------------------------------------
    def _start(self, ctx: ActionContext) -> ActionResult:
        settings = ctx.settings
        assert isinstance(settings, WaitForEventSettings)
        run, now = ctx.run, ctx.now
        lookback_from = now - (settings.lookback or timedelta(0))
        # The step's `timeout` is the wait's: an inline step has no attempt to time out.
        timeout = ctx.step.timeout
        timeout_at = now + timeout if timeout is not None and timeout > timedelta(0) else None
        row: dict[str, Any] = {
            "id": new_id(),
            "tenant_id": run["tenant_id"],
            "run_id": run["id"],
            "step_key": ctx.step.key,
            "event_name": settings.event,
            "contact_id": None,  # found at the commit (_who)
            "identity_value": None,
            "match": settings.match,
            "status": wait_store.WAITING,
            "started_at": now,
            "lookback_from": lookback_from,
            "timeout_at": timeout_at,
            "resumed_at": None,
            "timed_out_at": None,
            "outcome_branch": None,
            "resumed_by_event_id": None,
            "created_at": now,
        }
        _history(
            ctx,
            "wait.started",
            wait_id=row["id"],
            event_name=settings.event,
            timeout_at=iso(timeout_at),
            lookback_from=iso(lookback_from) if settings.lookback else None,
        )
        look_back = settings.lookback is not None

        def insert(conn: Connection) -> Literal["wake"] | None:
            row["contact_id"], row["identity_value"] = self._who(conn, run)
            wait_store.lock_names(conn, row["tenant_id"], [row["event_name"]])
            wait_store.insert_wait(conn, row)
            # Stored events this wait could take: the lookback's, or one stored
            # while the round was evaluated (delivery did not see this wait yet).
            if look_back or wait_store.any_event_since(conn, row):
                return WAKE
            return None

        ctx.deferred.append(Deferred(insert))
        if timeout_at is None:
            return ActionResult(park=True)
        return ActionResult(park_until=timeout_at)

    @staticmethod
    def _who(conn: Connection, run: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The run's contact, else the contact its identity names, and the identity's value."""
        if run.get("contact_id"):
            return str(run["contact_id"]), run.get("identity_value")
        identity = run.get("identity")
        if not isinstance(identity, Mapping):
            return None, None
        return existing_contact(conn, run["tenant_id"], identity)

    # -- resumed ---------------------------------------------------------
    def _look_again(self, ctx: ActionContext, wait: Mapping[str, Any]) -> ActionResult:
        """Woken while open: take the first stored event of the window that matches."""
        for event in ctx.extra.get("window", ()):
            if self._matches(ctx, wait["match"], event):
                ctx.decisions.append(WaitDecision(str(wait["id"]), RECEIVED, str(event["id"])))
                _history(
                    ctx,
                    "wait.received",
                    wait_id=wait["id"],
                    event_id=event["id"],
                    lookback=bool(event["occurred_at"] < wait["started_at"]),
                )
                return ActionResult(output=event_output(event), branch=RECEIVED)
        if wait["timeout_at"] is None:
            return ActionResult(park=True)
        return ActionResult(park_until=wait["timeout_at"])

    @staticmethod
    def _matches(ctx: ActionContext, match: str | None, event: Mapping[Any, Any]) -> bool:
        """Whether ``event`` satisfies ``match``; one that cannot be evaluated does not.

        A breach of the step's budget is not a mismatch: it fails the step.
        """
        if not match:
            return True
        try:
            return evaluate_bool(match, {**ctx.scope, "event": event_output(event)})
        except (ExpressionTimeout, ExpressionTooLarge):
            raise
        except ExpressionError:
            return False

    @staticmethod
    def _settled(ctx: ActionContext, wait: Mapping[str, Any]) -> ActionResult:
        """Report a wait decided already."""
        status = wait["status"]
        if status == wait_store.RECEIVED:
            _history(
                ctx,
                "wait.received",
                wait_id=wait["id"],
                event_id=wait["resumed_by_event_id"],
                resumed_at=iso(wait["resumed_at"]),
            )
            event = {
                "id": wait["resumed_by_event_id"],
                "name": wait["event_name_seen"] or wait["event_name"],
                "identity": wait["event_identity"],
                "contact_id": wait["event_contact_id"],
                "payload": wait["event_payload"],
                "occurred_at": wait["event_occurred_at"],
            }
            return ActionResult(output=event_output(event), branch=RECEIVED)
        if status == wait_store.TIMED_OUT:
            return ActionResult(
                output={
                    "timed_out_at": iso(wait["timed_out_at"]),
                    "timeout_at": iso(wait["timeout_at"]),
                },
                branch=TIMED_OUT,
            )
        raise StepError(f"the wait was {status}", retryable=False, code="wait_closed")

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Without a database, nothing can arrive: the wait times out (or would park)."""
        if ctx.step.timeout is None:
            return ActionResult(park=True)
        return ActionResult(
            output={"timeout_at": iso(ctx.now + ctx.step.timeout)}, branch=TIMED_OUT
        )
