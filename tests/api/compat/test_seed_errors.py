"""Answers made before a seed adapter's route runs still come in that seed's error shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import BODY_LIMIT, TestClient

RUN = "01a2370b-833d-7406-a726-ad944a608bd5"  # no such run: the request never gets that far
# A path of each seed taking a body, and where its error shape puts the code.
SEEDS: dict[str, tuple[str, str]] = {
    "000": ("/v3/automations/welcome/trigger", "code"),
    "001": (f"/automation-runs/{RUN}", "error.code"),
    "002": (f"/api/v1/automation-runs/{RUN}/cancel", "code"),
    "003": (f"/api/automations/runs/{RUN}/cancel", "error.code"),
}


def _at(body: Any, where: str) -> Any:
    for part in where.split("."):
        body = body[part]
    return body


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_a_body_over_the_limit_is_refused_in_the_seeds_shape(
    seed: str, client: TestClient, auth: dict[str, str]
) -> None:
    path, where = SEEDS[seed]
    method = "GET" if seed == "001" else "POST"
    response = client.request(method, path, json={"reason": "x" * (BODY_LIMIT + 10)}, headers=auth)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    assert _at(response.json(), where) == "payload_too_large"


def test_conveyors_own_paths_keep_problem_json(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/automations", json={"name": "x" * (BODY_LIMIT + 10)}, headers=auth
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"
