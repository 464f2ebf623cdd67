"""CLI test fixtures: a live server with a running worker, and isolation from the host.

CLI tests never read the configuration or the environment of whoever runs
them: each gets an empty ``XDG_CONFIG_HOME``, no ``CONVEYOR_URL`` /
``CONVEYOR_API_KEY``, and 80 columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.store.db import Database
from tests.api.live import served_with_worker


@pytest.fixture(autouse=True)
def config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty configuration directory, no ``CONVEYOR_*`` client settings, 80 columns."""
    config = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    for name in ("CONVEYOR_URL", "CONVEYOR_API_KEY", "CONVEYOR_TENANT", "CONVEYOR_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    return config


@pytest.fixture(autouse=True)
def quiet_in_process_servers() -> Iterator[None]:
    """Keep the access and run-end lines of servers and workers in this process off stderr.

    They write to whatever ``sys.stderr`` is at each line (``conveyor.logs``), so
    a request served while ``CliRunner`` captures would land in the command's
    stderr, which the tests compare: in real use the server is another process.
    """
    loggers = [logging.getLogger(name) for name in ("conveyor.access", "conveyor.runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@dataclass
class Live:
    """A tenant with an all-scopes key on a live server whose worker runs what is started."""

    db: Database
    url: str
    key: str
    tenant: str

    @property
    def env(self) -> dict[str, str]:
        """The environment that points the CLI at this server."""
        return {"CONVEYOR_URL": self.url, "CONVEYOR_API_KEY": self.key}

    def cli(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
        """Run ``conveyor ARGS`` against the server (in this process)."""
        return CliRunner().invoke(app, list(args), env={**self.env, **(env or {})}, input=stdin)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """What the API answers (JSON), to compare with what the CLI printed."""
        headers = {"Authorization": f"Bearer {self.key}"}
        # Generous: on a loaded 2-core CI host a read can wait seconds behind the worker's
        # SQLite write (httpx's 5 s default once timed out there); this only catches hangs.
        kw.setdefault("timeout", 60.0)
        response = httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, **kw)
        assert response.is_success, response.text
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def live(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server and worker per test module, on its own SQLite file (tests share it)."""
    folder = tmp_path_factory.mktemp("cli-live")
    with served_with_worker(sqlite_template, folder, "cli") as live:
        yield Live(live.db, live.url, live.key, live.tenant)
