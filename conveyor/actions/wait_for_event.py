"""``wait_for_event``: park the step until a matching event arrives or the timeout passes.

Inline: the first execution writes the wait row in the round's transaction
(and, with a ``lookback``, first takes a matching event already stored), then
parks the step until ``timeout_at`` (or indefinitely without a timeout).
Delivery of an event (``conveyor.engine.waits.deliver_event``) decides the
wait ``received`` and wakes the step; the step's timer, when it resumes at
``timeout_at``, decides it ``timed_out``. Both are one compare-and-set on the
wait row, so exactly one wins, and the resumed step reports whichever did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Connection, RowMapping

from conveyor.actions.base import ActionContext, ActionResult, StepError
from conveyor.domain.contacts import parse_identity
from conveyor.domain.errors import ConveyorError, ExpressionError
from conveyor.domain.expressions import evaluate_bool
from conveyor.domain.ids import new_id
from conveyor.domain.times import iso
from conveyor.store import contacts as contact_store
from conveyor.store import waits as wait_store

RECEIVED = "received"
TIMED_OUT = "timed_out"


class WaitForEventSettings(BaseModel):
    """What to wait for. How long is the step's common ``timeout`` field."""

    model_config = ConfigDict(extra="forbid")
    event: str = Field(min_length=1, max_length=200)
    match: str | None = None
    lookback: timedelta | None = None

    @model_validator(mode="after")
    def _durations(self) -> WaitForEventSettings:
        if self.lookback is not None and self.lookback < timedelta(0):
            raise ValueError("`lookback` cannot be negative")
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
        """Same as ``execute_inline``: it only reads and writes rows of its own run."""
        return self.execute_inline(ctx)

    def prepare_batch(
        self, conn: Connection, resumed: Sequence[tuple[str, str]], now: datetime
    ) -> dict[tuple[str, str], Any]:
        """Time out every due wait of a batch's resumed steps in one compare-and-set."""
        return dict(wait_store.time_out_many(conn, sorted({run for run, _ in resumed}), now))

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Start waiting, or, once resumed, report what decided the wait."""
        conn = ctx.conn
        if conn is None:
            raise StepError("wait_for_event needs the round's transaction", retryable=False)
        run_id, key = ctx.run["id"], ctx.step.key
        if ctx.resumed:
            # Resumed at its timeout (the common case when many wake together), the
            # compare-and-set alone decides it: done for the whole batch by
            # `prepare_batch`, else one statement here.
            if "batch" in ctx.extra:
                timed_out = ctx.extra["batch"]
            else:
                timed_out = wait_store.time_out(conn, run_id, key, ctx.now)
            if timed_out is not None:
                _history(
                    ctx,
                    "wait.timed_out",
                    wait_id=timed_out["id"],
                    timeout_at=iso(timed_out["timeout_at"]),
                )
                return ActionResult(
                    output={
                        "timed_out_at": iso(ctx.now),
                        "timeout_at": iso(timed_out["timeout_at"]),
                    },
                    branch=TIMED_OUT,
                )
        wait = wait_store.get_wait_with_event(conn, run_id, key)
        if wait is None:
            return self._start(conn, ctx)
        return self._settle(ctx, wait)

    # -- first execution -------------------------------------------------
    def _start(self, conn: Connection, ctx: ActionContext) -> ActionResult:
        settings = ctx.settings
        assert isinstance(settings, WaitForEventSettings)
        run, now = ctx.run, ctx.now
        contact_id, identity_value = self._who(conn, run)
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
            "contact_id": contact_id,
            "identity_value": identity_value,
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
        early = self._lookback(conn, ctx, row) if settings.lookback else None
        if early is not None:
            # Taken at once: the row is new in this transaction, so no one else can race it.
            row.update(
                status=wait_store.RECEIVED,
                resumed_at=now,
                resumed_by_event_id=early["id"],
                outcome_branch=RECEIVED,
            )
            wait_store.insert_wait(conn, row)
            _history(ctx, "wait.received", wait_id=row["id"], event_id=early["id"], lookback=True)
            return ActionResult(output=event_output(early), branch=RECEIVED)
        wait_store.insert_wait(conn, row)
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

    def _lookback(
        self, conn: Connection, ctx: ActionContext, row: Mapping[str, Any]
    ) -> RowMapping | None:
        """The first stored event in the lookback window that matches, if any."""
        found = wait_store.events_in_window(
            conn,
            row["tenant_id"],
            row["event_name"],
            contact_id=row["contact_id"],
            identity_value=row["identity_value"],
            since=row["lookback_from"],
            until=ctx.now,
        )
        for event in found:
            if self._matches(ctx, row["match"], event):
                return event
        return None

    @staticmethod
    def _matches(ctx: ActionContext, match: str | None, event: Mapping[Any, Any]) -> bool:
        if not match:
            return True
        try:
            return evaluate_bool(match, {**ctx.scope, "event": event_output(event)})
        except ExpressionError:
            return False

    # -- resumed ---------------------------------------------------------
    @staticmethod
    def _settle(ctx: ActionContext, wait: RowMapping) -> ActionResult:
        """Report a wait decided already, or keep waiting for its timeout (woken early)."""
        status = wait["status"]
        if status == wait_store.WAITING:
            timeout_at = wait["timeout_at"]
            if timeout_at is None:
                return ActionResult(park=True)
            # Its time has not come (or it would have been decided just above).
            return ActionResult(park_until=timeout_at)
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
