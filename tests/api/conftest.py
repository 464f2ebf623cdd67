"""Fixtures for API tests: the app on the real ``db`` (SQLite and PostgreSQL), tenants, keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services import keys as key_service
from conveyor.services import tenants as tenant_service
from conveyor.store.db import Database
from tests.api.helpers import TestClient, make_client

NewTenant = Callable[[str], dict[str, Any]]
NewKey = Callable[..., str]


@pytest.fixture
def client(db: Database) -> TestClient:
    """A client for the app on the parametrised database."""
    return make_client(db)


@pytest.fixture
def new_tenant(db: Database) -> NewTenant:
    """Create a tenant by name."""

    def make(name: str) -> dict[str, Any]:
        with db.transaction() as conn:
            return tenant_service.create_tenant(conn, name, now=SystemClock().now())

    return make


@pytest.fixture
def new_key(db: Database) -> NewKey:
    """Create a key in a tenant; return its token."""

    def make(tenant_id: str, scopes: Iterable[str] = ALL_SCOPES, label: str = "test") -> str:
        with db.transaction() as conn:
            _, token = key_service.create_key(
                conn, tenant_id=tenant_id, scopes=scopes, label=label, now=SystemClock().now()
            )
        return token

    return make


@pytest.fixture
def tenant(new_tenant: NewTenant) -> dict[str, Any]:
    """Tenant ``acme``."""
    return new_tenant("acme")


@pytest.fixture
def token(tenant: dict[str, Any], new_key: NewKey) -> str:
    """A key of ``acme`` with every scope."""
    return new_key(tenant["id"])


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    """Headers authenticating as ``acme`` with every scope."""
    return {"Authorization": f"Bearer {token}"}
