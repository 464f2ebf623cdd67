"""End-to-end fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http_server import HitServer, running_server


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A real HTTP server on 127.0.0.1 that counts hits."""
    with running_server() as server:
        yield server
