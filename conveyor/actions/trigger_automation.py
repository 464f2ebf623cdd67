"""``trigger_automation``: start a run of another automation (a child run), optionally waiting.

Inline: the step's settings are rendered while the round is evaluated, and
the child run is created in the round's commit (``Deferred``; no user code
runs there: the child's concurrency key is evaluated in its own first round),
with an idempotency key derived from the parent run and the step, so a step
that is executed again finds its child instead of starting a second one. With
``wait: true`` the step parks until the child ends (the child's last round
wakes it) and then completes with the child's status, or fails when the
child did not succeed.

Creating a run is engine work (``conveyor.engine.launch``), above this layer;
the engine installs the function that does it (``use_launcher``) when it is
imported, so this module depends on nothing above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import Connection

from conveyor.actions.base import ActionContext, ActionResult, Deferred, StepError
from conveyor.domain.status import RunStatus
from conveyor.domain.times import iso
from conveyor.store import child_runs

# A child that ended like this lets the parent's step complete; any other end fails it.
SUCCEEDED = frozenset({RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_ERRORS})


class Identity(BaseModel):
    """Who the child run is about (default: the parent's identity)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["email", "external_id", "contact_id"] = Field(
        description="email and external_id find the contact, or create it on first sight; "
        "contact_id names an existing one"
    )
    value: str = Field(
        min_length=1, max_length=500, description="the email, the external id or the contact's id"
    )


class TriggerAutomationSettings(BaseModel):
    """Settings of `trigger_automation`: which automation to start, with what, whether to wait.

    One child per (parent run, step); children nest at most 10 deep
    (`child_depth_exceeded`).
    """

    model_config = ConfigDict(extra="forbid")
    automation: str = Field(
        min_length=1,
        max_length=100,
        description="the automation to start: its name or id (`automation_not_found`, "
        "`automation_disabled` otherwise)",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="the child's `trigger.payload`; strings are templates"
    )
    identity: Identity | None = Field(
        None, description="who the child run is about; default this run's identity and contact"
    )
    wait: StrictBool = Field(
        False,
        description="true: the step waits until the child ends, then completes with its "
        "`status` (or fails, `child_run_failed`, when it did not succeed); false: it completes "
        "at once with `child_run_id`",
    )


class ChildLauncher(Protocol):
    """Creates the child run in ``conn`` (or returns the one its key already names)."""

    def __call__(
        self,
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
        """Return the child run row; raise ``StepError`` when it cannot be started."""
        ...


_launcher: ChildLauncher | None = None


def use_launcher(launcher: ChildLauncher) -> None:
    """Install the function that creates child runs (the engine does, on import)."""
    global _launcher
    _launcher = launcher


def child_key(parent_run_id: str, step_key: str) -> str:
    """The child's idempotency key: one child per (parent run, step), whatever the attempt."""
    return f"parent:{parent_run_id}:{step_key}"


class TriggerAutomationAction:
    """Start a child run, linked both ways: it has ``parent_run_id``, the output names it."""

    step_type: ClassVar[str] = "trigger_automation"
    settings_model: ClassVar[type[BaseModel]] = TriggerAutomationSettings
    branches: ClassVar[frozenset[str]] = frozenset()
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    inline: ClassVar[bool] = True

    async def execute(self, ctx: ActionContext) -> ActionResult:
        """Same as ``execute_inline``."""
        return self.execute_inline(ctx)

    def execute_inline(self, ctx: ActionContext) -> ActionResult:
        """Leave starting the child (once) and reading its state to the round's commit."""
        settings = ctx.settings
        assert isinstance(settings, TriggerAutomationSettings)
        parent, step_key, now = ctx.run, ctx.step.key, ctx.now
        history = ctx.extra.setdefault("history", [])

        def start(conn: Connection) -> ActionResult | StepError:
            try:
                return self._start(conn, settings, parent, step_key, now, history)
            except StepError as exc:
                return exc

        ctx.deferred.append(Deferred(start))
        return ActionResult(deferred=True)

    def _start(
        self,
        conn: Connection,
        settings: TriggerAutomationSettings,
        parent: Mapping[str, Any],
        step_key: str,
        now: datetime,
        history: list[tuple[str, dict[str, Any]]],
    ) -> ActionResult:
        """Start the child (once), then either complete or wait for the child's end."""
        key = child_key(parent["id"], step_key)
        child: Mapping[Any, Any] | None = child_runs.find_child(conn, parent["id"], key)
        if child is None:
            if _launcher is None:
                raise StepError("no run launcher is installed", retryable=False)
            identity = settings.identity.model_dump() if settings.identity else None
            child = _launcher(
                conn,
                parent=parent,
                step_key=step_key,
                automation=settings.automation,
                payload=settings.payload,
                identity=identity,
                idempotency_key=key,
                now=now,
            )
            history.append(
                (
                    "child_run.started",
                    {"child_run_id": child["id"], "automation": child["automation_name"]},
                )
            )
        if not settings.wait:
            return ActionResult(output={"child_run_id": child["id"]})
        status = RunStatus(child["status"])
        if not status.terminal:
            return ActionResult(park=True)  # the child's end wakes this step
        return self._outcome(child)

    @staticmethod
    def _outcome(child: Mapping[Any, Any]) -> ActionResult:
        status = RunStatus(child["status"])
        if status in SUCCEEDED:
            return ActionResult(
                output={
                    "child_run_id": child["id"],
                    "status": str(status),
                    "completed_at": iso(child["completed_at"]),
                }
            )
        error = child["error"] or {}
        reason = error.get("message") if isinstance(error, Mapping) else None
        raise StepError(
            f"child run {child['id']} ended {status}" + (f": {reason}" if reason else ""),
            retryable=False,
            code="child_run_failed",
            details={"child_run_id": child["id"], "status": str(status), "error": child["error"]},
        )

    def simulate(self, ctx: ActionContext) -> ActionResult:
        """Say which automation would be started, with what; start nothing."""
        settings = ctx.settings
        assert isinstance(settings, TriggerAutomationSettings)
        return ActionResult(
            output={
                "would_trigger": settings.automation,
                "payload": settings.payload,
                "wait": settings.wait,
            }
        )
