"""The runs list's Payload field (``order.id=123``) on both databases."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from typing import Any
from urllib.parse import urlencode

import pytest

from conveyor.clock import SystemClock
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant, trigger
from conveyor.web import runs_list
from tests.web.conftest import SignedIn
from tests.web.test_pages import audit, run_links

NOW = SystemClock().now()
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
NAPPER: dict[str, Any] = {"steps": [{"key": "nap", "type": "delay", "duration": "PT1H"}]}


@pytest.fixture
def runs(db: Database, tenant: str) -> dict[str, str]:
    """Runs of ``orders`` in ``acme`` with a few payloads; the same in another tenant."""
    payloads = {
        "int": {"order": {"id": 123}},
        "text": {"order": {"id": "123"}},
        "other": {"order": {"id": 124}},
        "hostile": {"order": {"id": HOSTILE}},
        "old": {"order": {"id": 123}},
    }
    make_automation(db, tenant, NAPPER | {"name": "orders"})
    ids = {}
    for i, (name, payload) in enumerate(payloads.items()):
        created = NOW - (timedelta(days=3) if name == "old" else timedelta(minutes=i + 1))
        ids[name] = trigger(db, tenant, "orders", payload, now=created)
    globex = make_tenant(db, "globex")
    make_automation(db, globex, NAPPER | {"name": "orders"})
    ids["globex"] = trigger(db, globex, "orders", payloads["int"], now=NOW)
    return ids


def _page(client: Any, **params: str) -> Any:
    return client.get(f"/ui/runs?{urlencode(params)}")


def test_payload_field_filters_the_list(signed_in: SignedIn, runs: dict[str, str]) -> None:
    client = signed_in()

    def listed(**params: str) -> set[str]:
        response = _page(client, **params)
        assert response.status_code == 200, response.text
        return set(run_links(audit(response)))

    assert listed(payload="order.id=123", window="1h") == {runs["int"], runs["text"]}
    assert listed(payload="payload.order.id=123", window="7d") == {
        runs["int"],
        runs["text"],
        runs["old"],
    }
    assert listed(payload=" order.id = 124 ", window="1h") == {runs["other"]}
    assert listed(payload=f"order.id={HOSTILE}", window="1h") == {runs["hostile"]}
    assert listed(payload="order.id=nothing", window="1h") == set()
    # The form keeps the value (escaped), so the URL round-trips.
    html = _page(client, payload=f"order.id={HOSTILE}", window="1h").text
    assert "<script>alert(1)" not in html
    assert 'name="payload" value="order.id=&#34;&gt;&lt;script&gt;' in html


def test_payload_rides_along_pages_and_bulk_actions(
    signed_in: SignedIn, runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_list, "PAGE_SIZE", 1)
    client = signed_in()
    html = _page(client, payload="order.id=123", window="1h").text
    older = re.search(r'rel="next" href="([^"]+)"', html)
    assert older is not None
    assert "payload=order.id%3D123" in older.group(1)
    second = client.get(unescape(older.group(1)))
    assert second.status_code == 200
    assert len(run_links(audit(second))) == 1
    assert "Cancel all 2 matching runs still going" in html
    filters = re.search(r'data-kind="cancel" data-count="2" data-filters="([^"]+)"', html)
    assert filters is not None
    sent = json.loads(unescape(filters.group(1)))
    assert sent["payload"] == {"path": "order.id", "value": "123"}
    assert "created_after" in sent


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("order.id", "write it as path=value"),
        ("order..id=1", "keys separated by dots"),
        ("order.id')--=1", "keys separated by dots"),
        (".".join("abcdefghi") + "=1", "at most 8 keys"),
        ("order.id=" + "x" * 501, "at most 500 characters"),
        ("order.id=a\x01b", "no control characters"),
        ("order.id=" + "x" * 1101, "at most 1,100 characters"),
    ],
    ids=["no-equals", "empty-key", "quote", "too-deep", "long-value", "control", "too-long"],
)
def test_bad_payloads_are_400_with_the_reason(
    signed_in: SignedIn, value: str, message: str
) -> None:
    response = _page(signed_in(), payload=value, window="1h")
    assert response.status_code == 400
    audit(response)
    assert message in unescape(response.text)


def test_sqlite_needs_a_window(db: Database, signed_in: SignedIn, runs: dict[str, str]) -> None:
    response = _page(signed_in(), payload="order.id=123")
    audit(response)
    if db.engine.dialect.name == "sqlite":
        assert response.status_code == 400
        assert "needs a time window" in response.text
    else:
        assert response.status_code == 200
        assert set(run_links(audit(response))) == {runs["int"], runs["text"], runs["old"]}
    # A start time is a window too.
    start = (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = _page(signed_in(), payload="order.id=123", **{"from": start})
    assert response.status_code == 200
    assert set(run_links(audit(response))) == {runs["int"], runs["text"]}


def test_bulk_counts_stop_at_their_cap(
    signed_in: SignedIn, runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_list, "BULK_COUNT_CAP", 2)
    html = _page(signed_in(), payload="order.id=123", window="7d").text
    assert "3 matching runs" in html  # the list's own count is not capped there
    assert "Cancel all 2+ matching runs still going" in html
    # A status the operation keeps reuses the list's count, capped the same way.
    html = _page(signed_in(), payload="order.id=123", window="7d", status="pending").text
    assert "Cancel all 2+ matching runs still going" in html


def test_the_live_list_asks_the_api_for_the_payload_filter(
    signed_in: SignedIn, runs: dict[str, str]
) -> None:
    # The page's stream and polling use these filters: the payload must be spelt
    # as the API takes it (the parameter's name carries the path), or the live
    # list would follow every run.
    client = signed_in()
    html = _page(client, payload="order.id=123", window="1h").text
    found = re.search(r'data-api-query="([^"]*)"', html)
    assert found is not None
    api_query = unescape(found.group(1))
    assert "payload.order.id=123" in api_query
    listed = client.get(f"/api/v1/runs?{api_query}", headers={"Accept": "application/json"})
    assert listed.status_code == 200, listed.text
    assert {r["id"] for r in listed.json()["items"]} == {runs["int"], runs["text"]}
