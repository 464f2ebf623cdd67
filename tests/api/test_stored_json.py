"""Defensive output: rows an older version stored with bad JSON never fail a list or a detail.

The rows are planted with SQL in SQLite (PostgreSQL's jsonb refuses
surrogates and NaN). Each route answers 200 with the bad parts replaced:
U+FFFD for a lone surrogate, null for NaN and Infinity, ``"<removed: too
deep>"`` past 64 levels; a warning names the object, never the content.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from conveyor.store.db import Database
from tests.api.helpers import TestClient, make_client
from tests.support.bad_json import REPLACEMENT, TOO_DEEP, Planted, depth, plant


@pytest.fixture
def planted(sqlite_db: Database) -> Planted:
    return plant(sqlite_db)


@pytest.fixture
def client(sqlite_db: Database) -> TestClient:
    return make_client(sqlite_db)


def _strict(text: str) -> Any:
    """Parse as strict JSON parsers do: NaN and Infinity are errors."""

    def refuse(literal: str) -> Any:
        raise ValueError(f"{literal} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _replaced(text: str) -> None:
    body = _strict(text)
    assert REPLACEMENT in text
    assert TOO_DEEP in text
    assert "ok \ufffd here" in text  # the rest of the string is kept
    assert depth(body) <= 64
    text.encode("utf-8")


def test_every_view_answers_200_with_the_bad_parts_replaced(
    client: TestClient, planted: Planted, caplog: pytest.LogCaptureFixture
) -> None:
    run = planted.run_id
    views = [
        "/api/v1/events",
        f"/api/v1/events/{planted.event_id}",
        "/api/v1/contacts",
        f"/api/v1/contacts/{planted.contact_id}",
        "/api/v1/runs",
        "/api/v1/automations/bad-json/runs",
        f"/api/v1/runs/{run}",
        f"/api/v1/runs/{run}/steps",
        f"/api/v1/runs/{run}/steps/compute/output",
        f"/api/v1/runs/{run}/events",
        "/api/v1/messages",
        f"/api/v1/messages/{planted.message_id}",
        "/api/v1/dry-run-results",
        f"/api/v1/dry-run-results/{planted.result_id}",
        "/api/v1/templates",
        f"/api/v1/templates/{planted.template}",
    ]
    with caplog.at_level(logging.WARNING, logger="conveyor.api.safe_json"):
        for view in views:
            response = client.get(view, headers=planted.auth)
            assert response.status_code == 200, (view, response.text)
            _replaced(response.text)

    output = client.get(f"/api/v1/runs/{run}/steps/compute/output", headers=planted.auth).json()
    result = output["result"]
    assert (result["nan"], result["inf"], result["text"]) == (None, None, "ok \ufffd here")
    assert result["key \ufffd"] == 1
    assert result["fine"] == {"a": [1, 2.5, "é"]}

    warnings = [r.getMessage() for r in caplog.records]
    assert any(planted.event_id in w and "/items/0/payload/nan" in w for w in warnings)
    assert any(f"/api/v1/runs/{run}" in w for w in warnings)
    assert all("ok \ufffd here" not in w and "ok \ud800" not in w for w in warnings)


def test_the_live_history_stream_sends_the_bad_parts_replaced(
    client: TestClient, planted: Planted
) -> None:
    headers = {**planted.auth, "Accept": "text/event-stream"}
    with client.stream("GET", f"/api/v1/runs/{planted.run_id}/events", headers=headers) as stream:
        assert stream.status_code == 200
        text = "".join(stream.iter_text())
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data:")]
    assert data, text
    first = _strict(data[0])
    assert first["seq"] == 1
    _replaced(data[0])
    for line in data[1:]:
        _strict(line)
