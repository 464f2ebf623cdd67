"""Finding a dry run's results: by the dry run, and by who asked (a key with or without a label)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api.conftest import NewKey
from tests.api.helpers import TestClient, assert_problem

URL = "/api/v1/dry-run-results"
DEFINITION: dict[str, Any] = {
    "name": "welcome",
    "trigger": {"type": "manual"},
    "steps": [{"key": "greet", "type": "set", "vars": {"greeting": "hello"}}],
}


def _ids(client: TestClient, auth: dict[str, str], **params: str) -> set[str]:
    page = client.get(URL, params=params, headers=auth)
    assert page.status_code == 200, page.text
    return {item["id"] for item in page.json()["items"]}


def test_results_by_dry_run_and_by_requester(
    client: TestClient,
    auth: dict[str, str],
    tenant: dict[str, Any],
    new_key: NewKey,
    work: Callable[[], int],
) -> None:
    unlabelled = {"Authorization": f"Bearer {new_key(tenant['id'], label='')}"}
    keys = client.get("/api/v1/keys", headers=auth).json()["items"]
    (key_id,) = [k["id"] for k in keys if k["label"] == ""]
    contact = client.post("/api/v1/contacts", json={"email": "ann@example.com"}, headers=auth)
    assert contact.status_code == 201, contact.text
    assert client.post("/api/v1/automations", json=DEFINITION, headers=auth).status_code == 201

    def dry_run(headers: dict[str, str], end: str) -> dict[str, Any]:
        body = {
            "dry_run": True,
            "start_date": "2026-06-01",
            "end_date": end,
            "profile_ids": [contact.json()["id"]],
        }
        response = client.post("/api/v1/automations/welcome/trigger", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return dict(response.json())

    anonymous = dry_run(unlabelled, "2026-06-02")
    labelled = dry_run(auth, "2026-06-03")
    # A key without a label is named by its id; a labelled one by its label.
    assert anonymous["requested_by"] == key_id
    assert labelled["requested_by"] == "test"
    work()

    everything = client.get(URL, headers=auth).json()["items"]
    assert len(everything) == 5
    mine = {r["id"] for r in everything if r["dry_run_id"] == anonymous["id"]}
    theirs = {r["id"] for r in everything if r["dry_run_id"] == labelled["id"]}
    assert (len(mine), len(theirs)) == (2, 3)
    assert {r["requested_by"] for r in everything if r["id"] in mine} == {key_id}
    got = client.get(f"/api/v1/dry-runs/{anonymous['id']}", headers=auth).json()
    assert got["requested_by"] == key_id

    assert _ids(client, auth, dry_run_id=anonymous["id"]) == mine
    assert _ids(client, auth, **{"filter[dry_run_id]": labelled["id"]}) == theirs
    assert _ids(client, auth, dry_run_id=anonymous["id"].upper()) == mine
    assert _ids(client, auth, requested_by=key_id) == mine
    assert _ids(client, auth, **{"filter[requested_by]": "test"}) == theirs
    assert _ids(client, auth, dry_run_id=anonymous["id"], requested_by="test") == set()
    assert _ids(client, auth, dry_run_id="01934a5e-0000-7000-8000-0000000000ff") == set()
    assert _ids(client, auth, dry_run_id=labelled["id"], run_at="2026-06-03") == {
        r["id"] for r in everything if r["id"] in theirs and r["run_at"] == "2026-06-03"
    }
    body = assert_problem(
        client.get(URL, params={"dry_run_id": "welcome"}, headers=auth), 422, "validation_error"
    )
    assert body["errors"][0]["loc"] == ["query", "dry_run_id"]
