"""Helpers shared by the API tests."""

from __future__ import annotations

import warnings
from typing import Any

from sqlalchemy import Table, func, select

from conveyor.api.app import create_app
from conveyor.clock import SystemClock
from conveyor.settings import Settings
from conveyor.store.db import Database

with warnings.catch_warnings():
    # Starlette wants the `httpx2` package and warns when it falls back to
    # `httpx`, which `filterwarnings = error` would turn into a failure.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["BODY_LIMIT", "DEFINITION", "TestClient", "assert_problem", "count", "make_client"]

BODY_LIMIT = 4096

DEFINITION: dict[str, Any] = {
    "name": "order-follow-up",
    "trigger": {"type": "manual"},
    "steps": [
        {"key": "greet", "type": "set", "vars": {"greeting": "hello", "nothing": None}},
        {"key": "check", "type": "condition", "expression": "vars.greeting == 'hello'"},
    ],
}


def make_client(
    db: Database,
    *,
    raise_server_exceptions: bool = True,
    base_url: str = "http://testserver",
    peer: tuple[str, int] = ("testclient", 50000),
    **overrides: Any,
) -> TestClient:
    """A client for an app on ``db`` with a small body limit (and any other ``overrides``).

    ``base_url`` is where the client believes the server is; ``peer`` the
    address the server sees the requests come from.
    """
    settings = Settings(
        database_url=db.url.render_as_string(hide_password=False),
        **{"max_body_bytes": BODY_LIMIT, **overrides},
    )
    app = create_app(settings, db=db, clock=SystemClock())
    return TestClient(
        app, raise_server_exceptions=raise_server_exceptions, base_url=base_url, client=peer
    )


def count(db: Database, table: Table) -> int:
    """Rows in ``table`` (to check that a refused request stored nothing)."""
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check a problem+json response; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"]
    assert body["detail"]
    assert body["type"] == f"urn:conveyor:problem:{code}"
    return body
