"""A dry run whose range starts before the event retention window is refused (422)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from conveyor.services.dry_runs import first_day_with_history
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_runs
from conveyor.testing.factories import make_automation
from tests.api.conftest import NewKey, NewTenant
from tests.api.helpers import assert_problem, count, make_client

EVENTS = {
    "name": "on-order",
    "trigger": {"type": "event", "event": "order.completed"},
    "steps": [{"key": "one", "type": "set", "vars": {"n": 1}}],
}


def test_a_start_before_the_event_window_is_refused_and_one_inside_accepted(
    db: Database, new_tenant: NewTenant, new_key: NewKey
) -> None:
    tenant = new_tenant("acme")
    make_automation(db, tenant["id"], EVENTS)
    client = make_client(db, retention_events_days=90)
    auth = {"Authorization": f"Bearer {new_key(tenant['id'])}"}

    def ask(ago: int) -> Any:
        start = (datetime.now(UTC).date() - timedelta(days=ago)).isoformat()
        return client.post(
            "/api/v1/automations/on-order/trigger",
            json={"dry_run": True, "start_date": start, "end_date": start},
            headers=auth,
        )

    body = assert_problem(ask(91), 422, "invalid_dry_run")
    assert "event retention window" in body["detail"]
    assert count(db, dry_runs) == 0
    response = ask(88)
    assert response.status_code == 202, response.text
    assert count(db, dry_runs) == 1


@pytest.mark.parametrize(
    ("now", "days", "first"),
    [
        (datetime(2026, 6, 10, 12, 0, tzinfo=UTC), 90, date(2026, 3, 13)),  # a part day: next
        (datetime(2026, 6, 10, 0, 0, tzinfo=UTC), 90, date(2026, 3, 12)),  # midnight: that day
        (datetime(2026, 6, 10, 12, 0, tzinfo=UTC), 0, None),  # kept forever: no limit
    ],
)
def test_the_first_whole_day_inside_the_window(
    now: datetime, days: int, first: date | None
) -> None:
    assert first_day_with_history("UTC", now, days) == first
