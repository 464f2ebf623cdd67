"""Dry runs end to end: the request, the worker's simulation, the stored results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.clock import FakeClock
from conveyor.dryrun import days
from conveyor.engine.worker import Worker
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.dryrun_tables import dry_run_results, dry_runs
from conveyor.store.messaging_tables import messages
from conveyor.store.tables import runs, step_runs, tasks
from tests.api.helpers import TestClient, assert_problem, count
from tests.support.http_server import HitServer

Work = Callable[[], int]
MANUAL: dict[str, Any] = {
    "name": "welcome",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello {{ contact.email }}"}},
        {"key": "pro", "type": "condition", "expression": "contact.attributes.plan == 'pro'"},
        {
            "key": "mail",
            "type": "send_email_template",
            "template": "welcome",
            "depends_on": ["pro.true"],
        },
    ],
}


def _contact(client: TestClient, auth: dict[str, str], email: str, **attributes: Any) -> str:
    response = client.post(
        "/api/v1/contacts", json={"email": email, "attributes": attributes}, headers=auth
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


def _automation(client: TestClient, auth: dict[str, str], definition: dict[str, Any]) -> str:
    response = client.post("/api/v1/automations", json=definition, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _template(client: TestClient, auth: dict[str, str]) -> None:
    body = {"channel": "email", "subject": "Welcome", "text": "Hi {{ contact.email }}"}
    assert client.put("/api/v1/templates/welcome", json=body, headers=auth).status_code in (
        200,
        201,
    )


def _dry_run(client: TestClient, auth: dict[str, str], automation: str, **body: Any) -> Any:
    return client.post(
        f"/api/v1/automations/{automation}/trigger", json={"dry_run": True, **body}, headers=auth
    )


def _results(db: Database, dry_run_id: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            select(dry_run_results)
            .where(dry_run_results.c.dry_run_id == dry_run_id)
            .order_by(dry_run_results.c.run_at, dry_run_results.c.profile_id)
        ).mappings()
        return [dict(r) for r in rows]


def _one_day(
    client: TestClient,
    auth: dict[str, str],
    db: Database,
    work: Work,
    automation: str,
    contact: str,
) -> tuple[str, dict[str, Any]]:
    """Dry-run ``automation`` for one contact on 1 June; the dry run's id and its one result."""
    response = _dry_run(
        client,
        auth,
        automation,
        start_date="2026-06-01",
        end_date="2026-06-01",
        profile_ids=[contact],
    )
    assert response.status_code == 202, response.text
    work()
    dry_run_id = str(response.json()["id"])
    (result,) = _results(db, dry_run_id)
    return dry_run_id, result


def _step(result: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in result["result"]["steps"] if s["key"] == key)


def _nothing_created(db: Database) -> None:
    assert count(db, dry_runs) == 0
    assert count(db, tasks) == 0
    assert count(db, runs) == 0


def test_bad_requests_create_nothing(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    automation = _automation(client, auth, MANUAL)
    someone = _contact(client, auth, "ann@example.com")
    days = {"start_date": "2026-06-01", "end_date": "2026-06-03", "profile_ids": [someone]}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**days, "end_date": "2026-05-31"}, 422, "invalid_dry_run"),
        ({**days, "end_date": "2027-06-03"}, 422, "invalid_dry_run"),  # over 366 days
        ({**days, "start_date": "June 1st"}, 422, "validation_error"),
        (
            {**days, "profile_ids": [someone, "0190a1b2-0000-7000-8000-000000000000"]},
            422,
            "invalid_dry_run",
        ),
        ({**days, "profile_ids": None}, 422, "invalid_dry_run"),  # manual needs profiles
        ({**days, "version": 7}, 422, "invalid_dry_run"),
        ({**days, "timezone": "Mars/Olympus"}, 422, "invalid_dry_run"),
        ({**days, "identity": {"type": "email", "value": "a@b.c"}}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        assert_problem(_dry_run(client, auth, automation, **body), status, code)
    assert_problem(
        _dry_run(client, auth, "no-such-automation", **days), 404, "automation_not_found"
    )
    # Dry-run fields without `dry_run: true` must not start a real run either.
    response = client.post(f"/api/v1/automations/{automation}/trigger", json=days, headers=auth)
    assert_problem(response, 422, "validation_error")
    _nothing_created(db)


def _late_on_1_june(client: TestClient) -> None:
    """The API's clock stops at 22:30 UTC on 1 June 2026 (already 2 June east of UTC+2)."""
    app: Any = client.app
    app.state.clock = FakeClock(datetime(2026, 6, 1, 22, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, ("2026-06-01", "2026-06-01"), id="no-dates-today-in-utc"),
        pytest.param(
            {"timezone": "Pacific/Kiritimati"},  # UTC+14: already 2 June there
            ("2026-06-02", "2026-06-02"),
            id="no-dates-today-in-the-requests-zone",
        ),
        pytest.param(
            {"timezone": "America/New_York"}, ("2026-06-01", "2026-06-01"), id="zone-behind"
        ),
        pytest.param({"start_date": "2026-05-20"}, ("2026-05-20", "2026-05-20"), id="start-only"),
        pytest.param({"end_date": "2026-05-21"}, ("2026-05-21", "2026-05-21"), id="end-only"),
        pytest.param(
            {"start_date": "2026-05-20", "end_date": "2026-05-22"},
            ("2026-05-20", "2026-05-22"),
            id="both",
        ),
    ],
)
def test_absent_dates_mean_today_and_one_date_means_that_day(
    client: TestClient,
    auth: dict[str, str],
    db: Database,
    work: Work,
    body: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    _late_on_1_june(client)
    someone = _contact(client, auth, "ann@example.com")
    automation = _automation(client, auth, MANUAL)
    response = _dry_run(client, auth, automation, profile_ids=[someone], **body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert (created["start_date"], created["end_date"]) == expected
    assert (created["arguments"]["start_date"], created["arguments"]["end_date"]) == expected
    first, last = map(date.fromisoformat, expected)
    total = (last - first).days + 1
    assert created["days"] == {"done": 0, "total": total}
    work()
    assert {r["run_at"] for r in _results(db, created["id"])} == {
        (first + timedelta(days=i)).isoformat() for i in range(total)
    }


def test_without_dates_a_schedule_is_dry_run_for_today_in_its_own_zone(
    client: TestClient, auth: dict[str, str]
) -> None:
    _late_on_1_june(client)
    automation = _automation(
        client,
        auth,
        {
            "name": "morning",
            "trigger": {"type": "schedule", "cron": "0 9 * * *", "timezone": "Asia/Tokyo"},
            "steps": [{"key": "greet", "type": "set", "vars": {"x": 1}}],
        },
    )
    created = _dry_run(client, auth, automation).json()
    # 22:30 UTC is 07:30 the next day in Tokyo.
    assert (created["start_date"], created["end_date"], created["timezone"]) == (
        "2026-06-02",
        "2026-06-02",
        "Asia/Tokyo",
    )
    utc = _dry_run(client, auth, automation, timezone="UTC").json()
    assert (utc["start_date"], utc["end_date"]) == ("2026-06-01", "2026-06-01")


def test_manual_dry_run_simulates_each_day_and_contact(
    client: TestClient,
    auth: dict[str, str],
    db: Database,
    work: Work,
    http_server: HitServer,
) -> None:
    _template(client, auth)
    pro = _contact(client, auth, "pro@example.com", plan="pro")
    free = _contact(client, auth, "free@example.com", plan="free")
    definition = {
        **MANUAL,
        "steps": [
            *MANUAL["steps"],
            {
                "key": "crm",
                "type": "http_request",
                "method": "POST",
                "url": f"{http_server.url}/hooks/{{{{ contact.email }}}}",
                "json": {"greeting": "{{ vars.greeting }}"},
            },
        ],
    }
    automation = _automation(client, auth, definition)
    response = _dry_run(
        client,
        auth,
        automation,
        start_date="2026-06-01",
        end_date="2026-06-03",
        profile_ids=[pro, free],
        payload={"source": "test"},
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued"
    assert created["requested_by"] == "test"
    assert created["days"] == {"done": 0, "total": 3}
    assert response.headers["location"] == f"/api/v1/dry-runs/{created['id']}"
    # The request wrote the dry run and its day tasks, nothing else.
    assert count(db, tasks) == 3
    assert count(db, runs) == 0

    work()

    progress = client.get(f"/api/v1/dry-runs/{created['id']}", headers=auth).json()
    assert progress["status"] == "completed"
    assert progress["days"] == {"done": 3, "total": 3}
    assert progress["contacts"] == {"done": 6, "total": 6}
    assert progress["counts"] == {"success": 6, "failed": 0, "skipped": 0}
    results = _results(db, created["id"])
    assert sorted((r["run_at"], r["profile_id"]) for r in results) == sorted(
        (day, c) for day in ("2026-06-01", "2026-06-02", "2026-06-03") for c in (pro, free)
    )
    by_contact = {r["profile_id"]: r for r in results if r["run_at"] == "2026-06-02"}
    mail = _step(by_contact[pro], "mail")
    assert mail["status"] == "completed"
    assert mail["would"]["would_send"][0]["to"] == "pro@example.com"
    assert "Hi pro@example.com" in mail["would"]["would_send"][0]["text"]
    assert mail["at"] == "2026-06-02T00:00:00Z"
    assert _step(by_contact[free], "pro")["branch"] == "false"
    assert _step(by_contact[free], "mail")["status"] == "skipped"
    crm = _step(by_contact[pro], "crm")["would"]["would_request"]
    assert crm["url"] == f"{http_server.url}/hooks/pro@example.com"
    assert crm["json"] == {"greeting": "hello pro@example.com"}
    assert http_server.hits == {}  # reported, never made
    assert count(db, messages) == 0
    result = by_contact[pro]
    assert result["requested_by"] == "test"
    assert result["result_type"] == "run"
    assert result["arguments"]["payload"] == {"source": "test"}
    # The simulated run record: a terminal dry run with its steps, never a real run.
    with db.read() as conn:
        run = conn.execute(select(runs).where(runs.c.id == result["result_id"])).mappings().one()
        steps = (
            conn.execute(select(step_runs).where(step_runs.c.run_id == run["id"])).mappings().all()
        )
    assert run["dry_run"] is True
    assert run["status"] == "completed"
    assert {s["step_key"]: s["status"] for s in steps}["mail"] == "completed"
    assert count(db, tasks) == 0
    assert client.get("/api/v1/runs", headers=auth).json()["items"] == []
    listed = client.get("/api/v1/runs", params={"dry_run": "true"}, headers=auth).json()
    assert len(listed["items"]) == 6


def test_event_trigger_replays_history_with_waits_and_branches(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    def event(eid: str, name: str, email: str, at: str, **payload: Any) -> dict[str, Any]:
        return {
            "id": eid,
            "name": name,
            "identity": {"type": "email", "value": email},
            "occurred_at": at,
            "payload": payload,
        }

    # History first: the automation does not exist yet, so nothing real starts.
    batch = [
        event("e1", "order.completed", "alice@example.com", "2026-06-01T10:00:00Z", total=80),
        event("e2", "mail.open", "alice@example.com", "2026-06-01T10:20:00Z", order=1),
        event("e3", "order.completed", "bob@example.com", "2026-06-02T10:00:00Z", total=20),
        event("e4", "order.completed", "carol@example.com", "2026-06-02T11:00:00Z", total=5),
        event("e5", "mail.open", "bob@example.com", "2026-06-02T12:00:00Z", order=2),
    ]
    assert client.post("/api/v1/events", json={"events": batch}, headers=auth).status_code == 200
    automation = _automation(
        client,
        auth,
        {
            "name": "follow-up",
            "trigger": {
                "type": "event",
                "event": "order.completed",
                "filter": "event.payload.total > 10",
            },
            "steps": [
                {
                    "key": "opened",
                    "type": "wait_for_event",
                    "event": "mail.open",
                    "timeout": "PT1H",
                },
                {"key": "big", "type": "condition", "expression": "trigger.payload.total > 50"},
            ],
        },
    )
    response = _dry_run(client, auth, automation, start_date="2026-06-01", end_date="2026-06-03")
    assert response.status_code == 202, response.text
    work()
    results = _results(db, response.json()["id"])
    assert [r["run_at"] for r in results] == ["2026-06-01", "2026-06-02"]  # carol filtered out
    alice, bob = results
    assert _step(alice, "opened")["branch"] == "received"
    assert _step(alice, "opened")["would"]["id"] == "e2"
    assert _step(alice, "big")["branch"] == "true"
    assert _step(alice, "big")["at"] == "2026-06-01T10:20:00Z"  # the clock moved to the event
    assert _step(bob, "opened")["branch"] == "timed_out"  # bob opened two hours later
    assert _step(bob, "big")["branch"] == "false"
    assert _step(bob, "big")["at"] == "2026-06-02T11:00:00Z"
    progress = client.get(f"/api/v1/dry-runs/{response.json()['id']}", headers=auth).json()
    assert progress["contacts"] == {"done": 2, "total": 2}
    assert client.get("/api/v1/runs", headers=auth).json()["items"] == []


def test_schedule_trigger_fires_in_its_time_zone_for_its_audience(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    pro = _contact(client, auth, "pro@example.com", plan="pro")
    _contact(client, auth, "free@example.com", plan="free")
    automation = _automation(
        client,
        auth,
        {
            "name": "digest",
            "trigger": {
                "type": "schedule",
                "cron": "0 9 * * *",
                "timezone": "Europe/Paris",
                "audience": "contact.attributes.plan == 'pro'",
            },
            "steps": [
                {"key": "note", "type": "set", "vars": {"at": "{{ trigger.payload.scheduled_at }}"}}
            ],
        },
    )
    response = _dry_run(client, auth, automation, start_date="2026-06-01", end_date="2026-06-02")
    assert response.status_code == 202, response.text
    assert response.json()["timezone"] == "Europe/Paris"
    work()
    results = _results(db, response.json()["id"])
    assert [(r["run_at"], r["profile_id"]) for r in results] == [
        ("2026-06-01", pro),
        ("2026-06-02", pro),
    ]
    assert _step(results[0], "note")["would"] == {"at": "2026-06-01T07:00:00Z"}


def test_template_error_fails_the_result_with_its_reason(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    someone = _contact(client, auth, "ann@example.com")
    automation = _automation(
        client,
        auth,
        {
            "name": "broken",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "bad", "type": "set", "vars": {"x": "{{ contact.attributes.nope.deep }}"}},
                {"key": "after", "type": "set", "vars": {"y": 1}},
            ],
        },
    )
    dry_run_id, result = _one_day(client, auth, db, work, automation, someone)
    assert result["status"] == "failed"
    assert result["result"]["reason"]
    assert _step(result, "bad")["error"]["code"] == "template_error"
    assert _step(result, "after")["status"] == "skipped"
    progress = client.get(f"/api/v1/dry-runs/{dry_run_id}", headers=auth).json()
    assert progress["counts"] == {"success": 0, "failed": 1, "skipped": 0}


def test_delay_past_the_range_is_reported_and_stops(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    someone = _contact(client, auth, "ann@example.com")
    automation = _automation(
        client,
        auth,
        {
            "name": "slow",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "short", "type": "delay", "duration": "PT2H"},
                {"key": "long", "type": "delay", "duration": "P2D"},
                {"key": "after", "type": "set", "vars": {"y": 1}},
            ],
        },
    )
    _, result = _one_day(client, auth, db, work, automation, someone)
    assert _step(result, "short")["ended_at"] == "2026-06-01T02:00:00Z"
    assert result["result"]["stopped"]["step"] == "long"
    assert result["result"]["stopped"]["until"] == "2026-06-03T02:00:00Z"
    assert _step(result, "after")["status"] == "skipped"


def test_parallel_branches_keep_their_own_time(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    someone = _contact(client, auth, "ann@example.com")
    automation = _automation(
        client,
        auth,
        {
            "name": "two-branches",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "pause", "type": "delay", "duration": "PT6H"},
                {"key": "late", "type": "set", "vars": {"a": 1}},
                # Its own branch: starts with the run, whatever the delay does.
                {"key": "early", "type": "set", "vars": {"b": 2}, "depends_on": []},
                {"key": "forever", "type": "delay", "duration": "P3D", "depends_on": []},
                {"key": "after_forever", "type": "set", "vars": {"c": 3}},
                {"key": "join", "type": "set", "vars": {"d": 4}, "depends_on": ["late", "early"]},
            ],
        },
    )
    _, result = _one_day(client, auth, db, work, automation, someone)
    assert _step(result, "pause")["ended_at"] == "2026-06-01T06:00:00Z"
    assert _step(result, "late")["at"] == "2026-06-01T06:00:00Z"
    assert _step(result, "early")["at"] == "2026-06-01T00:00:00Z"  # not after the delay
    assert _step(result, "join")["at"] == "2026-06-01T06:00:00Z"  # when its last dependency ended
    assert _step(result, "join")["status"] == "completed"  # the cut-off branch did not stop it
    assert result["result"]["stopped"]["step"] == "forever"
    assert _step(result, "after_forever")["status"] == "skipped"
    assert _step(result, "after_forever")["skip_reason"] == "beyond the dry run's range"
    assert result["result"]["ended_at"] == "2026-06-01T06:00:00Z"


def test_cancel_stops_further_days(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    someone = _contact(client, auth, "ann@example.com")
    automation = _automation(client, auth, MANUAL)
    response = _dry_run(
        client,
        auth,
        automation,
        start_date="2026-06-01",
        end_date="2026-06-10",
        profile_ids=[someone],
    )
    dry_run_id = response.json()["id"]
    cancelled = client.post(f"/api/v1/dry-runs/{dry_run_id}/cancel", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert count(db, tasks) == 0
    work()
    assert _results(db, dry_run_id) == []
    again = client.post(f"/api/v1/dry-runs/{dry_run_id}/cancel", headers=auth)
    assert again.json()["status"] == "cancelled"
    done = _dry_run(
        client,
        auth,
        automation,
        start_date="2026-06-01",
        end_date="2026-06-01",
        profile_ids=[someone],
    ).json()
    work()
    finished = client.post(f"/api/v1/dry-runs/{done['id']}/cancel", headers=auth)
    assert_problem(finished, 409, "dry_run_finished")
    missing = client.get("/api/v1/dry-runs/0190a1b2-0000-7000-8000-000000000000", headers=auth)
    assert_problem(missing, 404, "dry_run_not_found")


@pytest.mark.parametrize("scope", ["automations:read", "dry-runs:delete"])
def test_progress_needs_dry_runs_read(
    client: TestClient, tenant: dict[str, Any], new_key: Any, scope: str
) -> None:
    token = new_key(tenant["id"], [scope])
    response = client.get(
        "/api/v1/dry-runs/0190a1b2-0000-7000-8000-000000000000",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_problem(response, 403, "forbidden")


def test_result_names_the_real_run_of_that_day_and_whether_it_agrees(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    ann = _contact(client, auth, "ann@example.com")
    bob = _contact(client, auth, "bob@example.com")
    automation = _automation(
        client,
        auth,
        {
            "name": "vip",
            "trigger": {"type": "manual"},
            "steps": [{"key": "vip", "type": "condition", "expression": "trigger.payload.vip"}],
        },
    )
    real: dict[str, str] = {}
    for contact, vip in ((ann, True), (bob, False)):
        started = client.post(
            f"/api/v1/automations/{automation}/trigger",
            json={"payload": {"vip": vip}, "identity": {"type": "contact_id", "value": contact}},
            headers=auth,
        )
        assert started.status_code == 202, started.text
        real[contact] = started.json()["id"]
    work()
    today = datetime.now(UTC).date().isoformat()
    response = _dry_run(
        client,
        auth,
        automation,
        start_date=today,
        end_date=today,
        profile_ids=[ann, bob],
        payload={"vip": True},
    )
    work()
    results = {r["profile_id"]: r for r in _results(db, response.json()["id"])}
    assert results[ann]["real_run_id"] == real[ann]
    assert results[ann]["agrees"] is True
    assert results[bob]["real_run_id"] == real[bob]
    assert results[bob]["agrees"] is False  # the real run took the other branch


def test_a_cancelled_real_run_never_agrees(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    """The simulation stops at the range's end where the real run was cancelled: both
    left the delay unfinished, but one run completed and the other was cancelled."""
    ann = _contact(client, auth, "ann@example.com")
    automation = _automation(
        client,
        auth,
        {
            "name": "slow",
            "trigger": {"type": "manual"},
            "steps": [
                {"key": "greet", "type": "set", "vars": {"x": 1}},
                {"key": "pause", "type": "delay", "duration": "P2D"},
            ],
        },
    )
    started = client.post(
        f"/api/v1/automations/{automation}/trigger",
        json={"identity": {"type": "contact_id", "value": ann}},
        headers=auth,
    )
    real = started.json()["id"]
    work()  # parked on the delay
    cancelled = client.post(f"/api/v1/runs/{real}/cancel", json={}, headers=auth)
    assert cancelled.status_code == 200, cancelled.text
    detail = client.get(f"/api/v1/runs/{real}", headers=auth).json()
    assert detail["status"] == "cancelled"
    assert {s["key"]: s["status"] for s in detail["steps"]} == {
        "greet": "completed",
        "pause": "cancelled",
    }
    response = _dry_run(client, auth, automation, profile_ids=[ann])  # today
    work()
    (result,) = _results(db, response.json()["id"])
    assert result["result"]["outcome"] == "completed"
    assert [s["status"] for s in result["result"]["steps"]] == ["completed", "skipped"]
    assert result["real_run_id"] == real
    assert result["agrees"] is False
    shown = client.get(f"/api/v1/dry-run-results/{result['id']}", headers=auth).json()
    assert shown["agrees"] is False


def test_a_day_that_crashes_leaves_nothing_and_is_redone_once(
    client: TestClient,
    auth: dict[str, str],
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann = _contact(client, auth, "ann@example.com")
    bob = _contact(client, auth, "bob@example.com")
    automation = _automation(client, auth, MANUAL)
    response = _dry_run(
        client,
        auth,
        automation,
        start_date="2026-06-01",
        end_date="2026-06-02",
        profile_ids=[ann, bob],
    )
    dry_run_id = response.json()["id"]
    clock = FakeClock(datetime.now(UTC))
    settings = Settings(database_url=db.url.render_as_string(hide_password=False))
    real = days.simulate_run
    calls = {"n": 0}

    def crash_on_second(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # mid-day: the first contact's result is written already
            raise RuntimeError("worker died")
        return real(*args, **kw)

    monkeypatch.setattr(days, "simulate_run", crash_on_second)
    asyncio.run(Worker(db, settings, clock=clock).run_until_idle())
    # The crashed day wrote nothing; the other day finished; the crashed one waits.
    assert [r["run_at"] for r in _results(db, dry_run_id)] in (
        ["2026-06-02", "2026-06-02"],
        ["2026-06-01", "2026-06-01"],
    )
    assert count(db, tasks) == 1
    monkeypatch.setattr(days, "simulate_run", real)
    clock.advance(600)
    asyncio.run(Worker(db, settings, clock=clock).run_until_idle())
    results = _results(db, dry_run_id)
    assert sorted((r["run_at"], r["profile_id"]) for r in results) == sorted(
        (d, c) for d in ("2026-06-01", "2026-06-02") for c in (ann, bob)
    )
    progress = client.get(f"/api/v1/dry-runs/{dry_run_id}", headers=auth).json()
    assert progress["status"] == "completed"
    assert progress["contacts"] == {"done": 4, "total": 4}
    with db.read() as conn:  # the crashed attempt's simulated runs were rolled back too
        assert len(conn.execute(select(runs.c.id).where(runs.c.dry_run.is_(True))).all()) == 4


def test_push_targets_holding_credentials_are_shown_masked(
    client: TestClient, auth: dict[str, str], db: Database, work: Work
) -> None:
    target = "json://bot:s3cr3t-token@push.example.com/hook"
    body = {"email": "ann@example.com", "push_targets": [target, "device-a"]}
    response = client.post("/api/v1/contacts", json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    contact = str(response.json()["id"])
    push = {"channel": "push", "title": "Hi", "body": "Hello {{ contact.email }}"}
    assert client.put("/api/v1/templates/hello", json=push, headers=auth).status_code in (200, 201)
    automation = _automation(
        client,
        auth,
        {
            "name": "pushy",
            "trigger": {"type": "manual"},
            "steps": [{"key": "push", "type": "send_push_template", "template": "hello"}],
        },
    )
    _, result = _one_day(client, auth, db, work, automation, contact)
    shown = [m["to"] for m in _step(result, "push")["would"]["would_send"]]
    assert shown[0].startswith("json://bot:****@push.example.com/hook")
    assert shown[1] == "device-a"
    assert "s3cr3t" not in json.dumps(result, default=str)
