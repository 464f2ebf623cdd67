"""Fixtures for the dashboard's page tests: the app on the real ``db``, signed-in clients."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.store.db import Database
from conveyor.testing.factories import make_tenant
from tests.api.helpers import TestClient, make_client

HERE = "http://testserver"  # make_client's origin

NewKey = Callable[..., str]
SignedIn = Callable[..., TestClient]


@pytest.fixture
def tenant(db: Database) -> str:
    """Tenant ``acme``'s id."""
    return make_tenant(db, "acme")


@pytest.fixture
def new_key(db: Database) -> NewKey:
    """Create a key in a tenant; return its token."""

    def make(tenant_id: str, scopes: Iterable[str] = ALL_SCOPES, label: str = "web") -> str:
        with db.transaction() as conn:
            _, token = key_service.create_key(
                conn, tenant_id=tenant_id, scopes=scopes, label=label, now=SystemClock().now()
            )
        return token

    return make


def sign_in(client: TestClient, token: str) -> dict[str, Any]:
    """Sign ``client`` in through ``POST /api/v1/session``, as the login page does."""
    response = client.post("/api/v1/session", json={"api_key": token}, headers={"Origin": HERE})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def signed_in(db: Database, tenant: str, new_key: NewKey) -> SignedIn:
    """A client of the app signed in with a key of ``acme`` (all scopes unless told)."""

    def make(scopes: Iterable[str] = ALL_SCOPES, tenant_id: str | None = None, **kw: Any) -> Any:
        client = make_client(db, **kw)
        client.follow_redirects = False
        sign_in(client, new_key(tenant_id or tenant, scopes))
        return client

    return make
