"""The runs a run started, on both databases: child runs and failure-triggered runs."""

from __future__ import annotations

import pytest

from conveyor.domain.errors import RunNotFound
from conveyor.services.lineage import started_runs
from conveyor.testing.factories import make_tenant
from tests.engine.conftest import Harness
from tests.engine.waits_support import start_run

CHILD = {"name": "child", "steps": [{"key": "echo", "type": "set", "vars": {"n": 1}}]}
PARENT = {
    "name": "parent",
    "steps": [
        {"key": "first", "type": "trigger_automation", "automation": "child", "payload": {}},
        {"key": "second", "type": "trigger_automation", "automation": "child", "payload": {}},
        {"key": "boom", "type": "set", "vars": {"x": "{{ trigger.payload.nope.x }}"}},
    ],
}
WATCHER = {
    "name": "on-parent-failure",
    "trigger": {"type": "automation_failure", "automations": ["parent"]},
    "steps": [{"key": "note", "type": "set", "vars": {"failed": "{{ trigger.payload.run_id }}"}}],
}


def test_a_run_lists_its_children_and_the_runs_its_failure_triggered(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(PARENT)
    h.automation(WATCHER)
    parent_id = start_run(h.db, h.tenant, "parent", h.clock.now(), payload={})
    h.work()
    assert h.detail(parent_id)["status"] == "failed"

    with h.db.read() as conn:
        links = started_runs(conn, h.tenant, parent_id)
    children = links["children"]
    assert [c["automation_name"] for c in children] == ["child", "child"]
    assert {c["trigger_type"] for c in children} == {"automation"}
    assert all(c["status"] == "completed" for c in children)
    for c in children:
        assert h.detail(c["id"])["parent_run_id"] == parent_id
    (failure,) = links["failure_runs"]
    assert failure["automation_name"] == "on-parent-failure"
    assert failure["trigger_type"] == "automation_failure"
    assert h.step(failure["id"], "note")["result"] == {"failed": parent_id}

    # A child started nothing; the failure run is not the child's.
    with h.db.read() as conn:
        assert started_runs(conn, h.tenant, children[0]["id"]) == {
            "children": [],
            "failure_runs": [],
        }
        assert len(started_runs(conn, h.tenant, parent_id, limit=1)["children"]) == 1


def test_another_tenant_sees_no_run_and_no_links(harness: Harness) -> None:
    h = harness
    h.automation(CHILD)
    h.automation(PARENT)
    parent_id = start_run(h.db, h.tenant, "parent", h.clock.now(), payload={})
    h.work()
    other = make_tenant(h.db, "other", now=h.clock.now())
    with h.db.read() as conn, pytest.raises(RunNotFound):
        started_runs(conn, other, parent_id)
