"""The registry of step types: the built-ins plus ``conveyor.actions`` entry points."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from conveyor.actions.base import Action
from conveyor.actions.delay import DelayAction
from conveyor.actions.http_request import HttpRequestAction
from conveyor.actions.logic import ConditionAction, FilterAction, SetAction
from conveyor.actions.send_email import SendEmailAction
from conveyor.actions.send_push import SendPushAction
from conveyor.actions.trigger_automation import TriggerAutomationAction
from conveyor.actions.wait_for_event import WaitForEventAction
from conveyor.domain.definition import StepTypeSpec

BUILTIN: tuple[type[Action], ...] = (
    SetAction,
    ConditionAction,
    FilterAction,
    DelayAction,
    HttpRequestAction,
    SendEmailAction,
    SendPushAction,
    WaitForEventAction,
    TriggerAutomationAction,
)


@lru_cache(maxsize=1)
def registry() -> dict[str, Action]:
    """Every known step type, by name. Plugins cannot replace a built-in."""
    actions: dict[str, Action] = {cls.step_type: cls() for cls in BUILTIN}
    for ep in entry_points(group="conveyor.actions"):
        cls = ep.load()
        actions.setdefault(cls.step_type, cls())
    return actions


def get_action(step_type: str) -> Action:
    """The action for a step type (KeyError if unknown)."""
    return registry()[step_type]


@lru_cache(maxsize=1)
def step_type_specs() -> dict[str, StepTypeSpec]:
    """What definition validation needs to know of each step type."""
    return {
        name: StepTypeSpec(settings_model=a.settings_model, branches=a.branches)
        for name, a in registry().items()
    }
