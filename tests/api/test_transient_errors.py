"""A request whose transaction PostgreSQL keeps aborting gets 503 ``database_busy``, not 500.

The deadlock itself and its retry are tested for real in tests/store; here the
service raises the error PostgreSQL would, every time.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from conveyor.services import events as event_service
from conveyor.store.db import Database
from tests.api.helpers import assert_problem, make_client


def _deadlock() -> OperationalError:
    return OperationalError("UPDATE ...", {}, psycopg.errors.DeadlockDetected("deadlock detected"))


def test_a_request_whose_transaction_keeps_being_aborted_gets_503(
    db: Database, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(db, raise_server_exceptions=False)
    calls: list[int] = []

    def always_aborted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise _deadlock()

    # The batch's write is the transaction PostgreSQL aborts.
    monkeypatch.setattr(event_service, "_write", always_aborted)
    response = client.post(
        "/api/v1/events",
        json={"id": "e1", "name": "x", "identity": {"type": "email", "value": "a@b.c"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_problem(response, 503, "database_busy")
    assert response.headers["Retry-After"] == "1"
    assert len(calls) == 3  # tried three times in all
