"""The CLI refuses, as the API does, JSON and YAML holding NaN, Infinity, lone surrogates or depth.

Nothing is stored or sent: the commands stop before they open the database
transaction or make a request (the servers named here do not exist).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app
from conveyor.store.db import Database
from conveyor.store.tables import automations

NOWHERE = {"CONVEYOR_URL": "http://127.0.0.1:9", "CONVEYOR_API_KEY": "cvk_nothing"}


@pytest.fixture
def url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def refused(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    return str(result.stderr)


def _automations(url: str) -> int:
    db = Database(url)
    try:
        with db.read() as conn:
            return len(conn.execute(automations.select()).all())
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("name", "text", "place"),
    [
        (
            "nan.yaml",
            "name: a\nsteps:\n  - key: s\n    type: set\n    vars: {x: .nan}\n",
            "/steps/0/vars/x",
        ),
        (
            "two.yaml",
            "name: a\nsteps: []\n---\nname: b\nsteps:\n  - {key: s, type: set, vars: {x: -.inf}}\n",
            "document 2 of",
        ),
        (
            "surrogate.yaml",
            'name: a\nsteps:\n  - key: s\n    type: set\n    vars: {x: "\\ud800"}\n',
            "/steps/0/vars/x",
        ),
        (
            "key.json",
            json.dumps(
                {"name": "a", "steps": [{"key": "s", "type": "set", "vars": {"\ud800": 1}}]}
            ),
            "/steps/0/vars/\ufffd",
        ),
        (
            "deep.json",
            '{"name": "a", "steps": ' + "[" * 3000 + "]" * 3000 + "}",
            "/steps" + "/0" * 63,
        ),
    ],
)
def test_automations_apply_refuses_a_file_with_bad_json(
    url: str, tmp_path: Path, name: str, text: str, place: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    message = refused(
        ["automations", "apply", "-f", str(path), "-t", "acme", "--database-url", url]
    )
    assert place in message
    assert "refuses" in message
    assert _automations(url) == 0


@pytest.mark.parametrize(
    ("args", "place"),
    [
        (["events", "send", "--name", "n", "--payload", '{"x": NaN}'], "--payload"),
        (["runs", "retry", "r1", "--mode", "full", "--payload", '{"a": [Infinity]}'], "/a/0"),
    ],
)
def test_payload_options_refuse_what_the_api_refuses(args: list[str], place: str) -> None:
    message = refused(args, NOWHERE)
    assert place in message
    assert "refuses" in message


def test_events_send_refuses_a_file_with_bad_json_before_sending(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [
        {"id": "e1", "name": "n"},
        {"id": "e2", "name": "n", "payload": {"x": float("nan")}},
    ]
    batch = tmp_path / "events.json"
    batch.write_text(json.dumps({"events": events}))
    assert "/events/1/payload/x" in refused(["events", "send", "-f", str(batch)], NOWHERE)
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(json.dumps(e) for e in events))
    message = refused(["events", "send", "-f", str(lines)], NOWHERE)
    assert "(line 2), at /payload/x" in message
