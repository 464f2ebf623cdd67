"""``GET /metrics`` on the app: who may read it, what it says about requests and the queue.

The clients' addresses are set per test (``peer``), so the loopback rule is
tested from a non-loopback address without needing one on the host; the real
processes are scraped in tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.metrics.access import refusal
from conveyor.store.db import Database
from conveyor.testing.factories import make_automation, make_tenant, trigger
from tests.api.helpers import DEFINITION, assert_problem, make_client

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("192.0.2.7", 50000)  # TEST-NET-1: never loopback
TOKEN = "metrics-token-0123456789"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_loopback_clients_read_it_and_others_are_refused(db: Database) -> None:
    assert make_client(db, peer=LOOPBACK).get("/metrics").status_code == 200
    assert make_client(db, peer=("::1", 50000)).get("/metrics").status_code == 200
    remote = make_client(db, peer=REMOTE).get("/metrics")
    assert_problem(remote, 403, "metrics_forbidden")
    assert "conveyor_" not in remote.text


def test_a_trusted_proxy_does_not_make_its_clients_loopback(db: Database) -> None:
    # The default trusted proxy is loopback: a reverse proxy on the same host
    # forwarding a remote client must not pass that client off as local.
    client = make_client(db, peer=LOOPBACK)
    response = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert_problem(response, 403, "metrics_forbidden")


def test_with_a_token_only_the_token_opens_it(db: Database) -> None:
    for peer in (LOOPBACK, REMOTE):
        client = make_client(db, peer=peer, metrics_token=TOKEN)
        missing = client.get("/metrics")
        assert_problem(missing, 401, "metrics_unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert_problem(wrong, 401, "metrics_unauthorized")
        basic = client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
        assert_problem(basic, 401, "metrics_unauthorized")
        ok = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")


def test_query_parameters_are_refused(db: Database) -> None:
    response = make_client(db, peer=LOOPBACK).get("/metrics", params={"name[]": "x"})
    body = assert_problem(response, 422, "validation_error")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["query", "name[]"], "unknown_parameter")
    ]


def test_it_is_not_a_tenant_route(db: Database) -> None:
    client = make_client(db, peer=LOOPBACK)
    paths = client.get("/openapi.json").json()["paths"]
    assert "/metrics" not in paths
    # An API key is neither needed nor looked at.
    assert client.get("/metrics", headers={"Authorization": "Bearer not-a-key"}).status_code == 200


def test_requests_are_counted_by_route_template(db: Database) -> None:
    client = make_client(db, peer=LOOPBACK)
    before = _samples(client.get("/metrics").text)
    missing = "01930000-0000-7000-8000-000000000000"
    assert client.get(f"/api/v1/runs/{missing}").status_code == 401
    assert client.get("/no/such/page").status_code == 404
    after = _samples(client.get("/metrics").text)

    def moved(**labels: str) -> float:
        key = ("conveyor_http_requests_total", frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved(method="GET", route="/api/v1/runs/{run_id}", status="401") == 1
    assert moved(method="GET", route="<unmatched>", status="404") == 1
    assert not any(missing in str(labels) or "/no/such" in str(labels) for _, labels in after)


def test_queue_depth_and_oldest_due_age_come_from_the_database(db: Database) -> None:
    tenant = make_tenant(db)
    make_automation(db, tenant, DEFINITION)
    for _ in range(3):
        trigger(db, tenant, DEFINITION["name"])
    samples = _samples(make_client(db, peer=LOOPBACK).get("/metrics").text)
    assert samples[("conveyor_queue_depth", frozenset({("kind", "run")}))] == 3
    assert samples[("conveyor_queue_depth", frozenset({("kind", "schedule")}))] == 0
    # Every kind has its series, the operator's `prune` task included, even with none due.
    assert samples[("conveyor_queue_depth", frozenset({("kind", "prune")}))] == 0
    age = samples[("conveyor_queue_oldest_due_age_seconds", frozenset({("kind", "run")}))]
    assert 0 <= age < 600
    assert samples[("conveyor_queue_depth_capped", frozenset())] == 0


@pytest.mark.parametrize(
    ("token", "authorization", "client", "expected"),
    [
        (None, None, "127.0.0.1", None),
        (None, None, "127.8.9.10", None),
        (None, None, "::1", None),
        (None, None, "::ffff:192.0.2.7", 403),
        (None, None, "192.0.2.7", 403),
        (None, None, None, 403),  # a Unix socket: no address to judge
        (None, None, "testclient", 403),
        ("", None, "192.0.2.7", 403),  # an empty token is no token
        (TOKEN, None, "127.0.0.1", 401),
        (TOKEN, f"Bearer {TOKEN}", "192.0.2.7", None),
        (TOKEN, f"Bearer  {TOKEN} ", "192.0.2.7", None),
        (TOKEN, f"Bearer {TOKEN[:-1]}", "127.0.0.1", 401),
        (TOKEN, TOKEN, "127.0.0.1", 401),
    ],
)
def test_refusal(
    token: str | None, authorization: str | None, client: str | None, expected: int | None
) -> None:
    assert refusal(token, authorization, client) == expected
