"""The CLI's configuration file, ``login`` and ``dev``, and management commands without a schema."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.cli.config import config_path, toml_string, write_config
from conveyor.cli.main import app
from tests.cli.conftest import Live


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_toml_strings_read_back_as_written() -> None:
    for value in ("plain", 'a "quoted" \\ back', "tab\tnew\nline\r\x00\x1f\x7f", "é ☃ 😀"):
        assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


def test_the_file_is_private_and_replaced_whole(config_home: Path) -> None:
    path = write_config("http://example.test:1", 'cvk_"odd"\\key')
    assert path == config_home / "conveyor" / "config.toml" == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)  # made readable by someone: the next write closes it again
    write_config("http://example.test:2", "cvk_two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = tomllib.loads(path.read_text())
    assert saved == {"url": "http://example.test:2", "api_key": "cvk_two"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_precedence_flag_then_environment_then_file(live: Live, config_home: Path) -> None:
    # Nothing anywhere: the key is asked for.
    missing = run("runs", "list")
    assert missing.exit_code == 1
    assert "conveyor login" in missing.stderr

    # The file alone is enough.
    write_config(live.url, live.key)
    assert run("runs", "list", "-o", "json").exit_code == 0
    # The environment wins over the file, an option over the environment.
    bad_env = {"CONVEYOR_API_KEY": "cvk_wrong"}
    assert "401" in run("runs", "list", env=bad_env).stderr
    assert run("runs", "list", "--api-key", live.key, env=bad_env).exit_code == 0
    down = run("runs", "list", env={"CONVEYOR_URL": "http://127.0.0.1:9"})
    assert "cannot reach http://127.0.0.1:9" in down.stderr
    assert (
        run("runs", "list", "--url", live.url, env={"CONVEYOR_URL": "http://127.0.0.1:9"}).exit_code
        == 0
    )

    # The API's base URL as curl users keep it works too; a URL without a scheme does not.
    assert run("runs", "list", "--url", live.url + "/api/v1/").exit_code == 0
    schemeless = run("runs", "list", "--url", live.url.removeprefix("http://"))
    assert (schemeless.exit_code, "is not a server URL" in schemeless.stderr) == (2, True)

    config_path().write_text("url = [not toml")
    broken = run("runs", "list")
    assert (broken.exit_code, "is not valid TOML" in broken.stderr) == (2, True)


def test_login_checks_the_key_before_saving_it(live: Live) -> None:
    refused = run("login", "--url", live.url, "--api-key", "cvk_wrong")
    assert refused.exit_code == 1
    assert "did not accept the API key" in refused.stderr
    assert not config_path().exists()
    down = run("login", "--url", "http://127.0.0.1:9", "--api-key", live.key)
    assert (down.exit_code, "cannot reach http://127.0.0.1:9" in down.stderr) == (1, True)
    assert not config_path().exists()
    saved = run("login", "--url", live.url + "/", "--api-key", live.key)
    assert saved.exit_code == 0, saved.stderr
    assert tomllib.loads(config_path().read_text()) == {"url": live.url, "api_key": live.key}
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600
    assert run("automations", "list").exit_code == 0


def test_http_commands_log_no_request_lines(live: Live) -> None:
    # httpx logs each request's URL at INFO (tokens in query strings included).
    result = run("runs", "list", env={**live.env, "CONVEYOR_LOG_LEVEL": "DEBUG"})
    assert result.exit_code == 0
    assert "HTTP Request" not in result.stderr
    assert "httpx" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dev_saves_its_url_and_key_for_the_cli(tmp_path: Path, config_home: Path) -> None:
    port = _free_port()
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(config_home),
        "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "CONVEYOR_PORT": str(port),
        "CONVEYOR_DEV_KEY_FILE": str(tmp_path / "dev-key"),
        "CONVEYOR_DEV_SECRET_KEY_FILE": str(tmp_path / "dev-secret"),
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    with subprocess.Popen(
        [conveyor, "dev"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    ) as dev:
        try:
            deadline = time.monotonic() + 30
            while True:
                answer = run("automations", "list", "-o", "json")
                if answer.exit_code == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert answer.exit_code == 0, answer.stderr
            assert json.loads(answer.stdout)["items"] == []
        finally:
            dev.terminate()
            dev.communicate(timeout=30)
    saved = tomllib.loads(config_path().read_text())
    assert saved == {
        "url": f"http://127.0.0.1:{port}",
        "api_key": (tmp_path / "dev-key").read_text().strip(),
    }
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "command",
    [
        ["tenants", "list"],
        ["keys", "list", "-t", "acme"],
        ["automations", "list", "-t", "acme"],
        ["audit"],
        ["repair", "--dry-run"],
        ["secrets", "rotate"],
    ],
)
def test_management_commands_never_create_a_database(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVEYOR_DATABASE_URL", raising=False)
    result = run(*command)
    assert result.exit_code == 1
    assert "no database at sqlite:///conveyor.db (the default" in result.stderr
    assert "conveyor migrate" in result.stderr
    assert list(tmp_path.iterdir()) == []

    empty = tmp_path / "empty.db"
    empty.touch()
    result = run(*command, "--database-url", f"sqlite:///{empty}")
    assert result.exit_code == 1
    assert f"the database at sqlite:///{empty} has no Conveyor schema" in result.stderr
    assert "conveyor migrate" in result.stderr
    assert empty.stat().st_size == 0


def test_keys_expire_after_a_lifetime(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = ["--database-url", f"sqlite:///{path}"]
    assert run("tenants", "create", "acme", *url).exit_code == 0
    created = run(
        "keys", "create", "-t", "acme", "-s", "runs:read", "--expires", "90d", "-o", "json", *url
    )
    assert created.exit_code == 0, created.stderr
    expires = datetime.fromisoformat(json.loads(created.stdout)["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)
    iso = run(
        "keys", "create", "-t", "acme", "-s", "runs:read", "--expires", "PT12H", "-o", "json", *url
    )
    expires = datetime.fromisoformat(json.loads(iso.stdout)["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=1)
    for args, why in (
        (["--expires", "soon"], "write 90d"),
        (["--expires", "0d"], "positive"),
        (["--expires", "1d", "--expires-at", "2030-01-01"], "not both"),
    ):
        refused = run("keys", "create", "-t", "acme", "-s", "runs:read", *args, *url)
        assert (refused.exit_code, why in refused.stderr) == (2, True), refused.stderr
    listed = json.loads(run("keys", "list", "-t", "acme", "-o", "json", *url).stdout)
    assert (len(listed["items"]), listed["total"], listed["next_cursor"]) == (2, 2, None)
