"""The ``conveyor`` command against a real SQLite file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from conveyor.cli.common import now
from conveyor.cli.main import app, dev_egress, ensure_dev_key
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.services.keys import authenticate
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.store.tables import automation_versions, automations
from conveyor.store.tenants import count_tenants

DEFINITION: dict[str, Any] = {
    "name": "order-follow-up",
    "steps": [{"key": "greet", "type": "set", "vars": {"greeting": "hello"}}],
}


@pytest.fixture
def url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file's URL."""
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def run(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Invoke the CLI; ``url`` is passed as ``--database-url``."""
    argv = [*args, "--database-url", url] if url else list(args)
    return CliRunner().invoke(app, argv, env=env)


def ok(result: Any) -> str:
    """Check the command succeeded; return its stdout."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return str(result.stdout)


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    # The URL may come from the environment instead of the option.
    ok(run("migrate", env={"CONVEYOR_DATABASE_URL": url}))
    db = Database(url)
    try:
        with db.read() as conn:
            assert count_tenants(conn) == 0
    finally:
        db.dispose()


def test_tenants_create_and_list(url: str) -> None:
    created = json.loads(ok(run("tenants", "create", "acme", "-o", "json", url=url)))
    assert created["name"] == "acme"
    assert "acme" in ok(run("tenants", "list", url=url))
    again = run("tenants", "create", "acme", url=url)
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    bad = run("tenants", "create", "Not A Slug", url=url)
    assert bad.exit_code == 1
    assert "invalid tenant name" in bad.stderr


def test_tenants_set_from_domains(url: str) -> None:
    ok(run("tenants", "create", "acme", url=url))
    domains = "Shop.example,*.news.example"
    shown = json.loads(
        ok(run("tenants", "set-from-domains", "acme", domains, "-o", "json", url=url))
    )
    assert shown["email_from_domains"] == ["shop.example", "*.news.example"]
    assert "(none)" in ok(run("tenants", "set-from-domains", "acme", "", url=url))
    assert "(CONVEYOR_EMAIL_FROM_DOMAINS)" in ok(
        run("tenants", "set-from-domains", "acme", "--default", url=url)
    )
    for args, why in (
        (["a@shop.example"], "is not a domain"),
        ([], "give the domains, or --default"),
        (["x.example", "--default"], "give the domains, or --default"),
    ):
        failed = run("tenants", "set-from-domains", "acme", *args, url=url)
        assert failed.exit_code == 1
        assert why in failed.stderr
    missing = run("tenants", "set-from-domains", "nobody", "x.example", url=url)
    assert missing.exit_code == 1
    assert "not found" in missing.stderr


def test_keys_create_list_revoke(url: str) -> None:
    ok(run("tenants", "create", "acme", url=url))
    out = ok(
        run(
            "keys",
            "create",
            "--tenant",
            "acme",
            "--scope",
            "runs:read",
            "--scope",
            "automations:read",
            "--label",
            "ci",
            "--output",
            "json",
            url=url,
        )
    )
    key = json.loads(out)
    assert key["token"].startswith("cvk_")
    assert key["scopes"] == ["automations:read", "runs:read"]
    db = Database(url)
    try:
        with db.read() as conn:
            principal = authenticate(conn, key["token"], now())
        assert principal is not None
        assert principal.scopes == {"runs:read", "automations:read"}

        table = ok(run("keys", "create", "-t", "acme", "-s", "all", url=url))
        assert "token: cvk_" in table
        lines = ok(run("keys", "list", "--tenant", "acme", "--output", "jsonl", url=url))
        listed = [json.loads(line) for line in lines.splitlines()]
        assert [k["label"] for k in listed] == ["ci", ""]
        assert listed[1]["scopes"] == list(ALL_SCOPES)
        assert all("token" not in k for k in listed)
        assert key["prefix"] in ok(run("keys", "list", "--tenant", "acme", url=url))

        revoked = json.loads(ok(run("keys", "revoke", key["id"], "-o", "json", url=url)))
        assert revoked["revoked_at"] is not None
        with db.read() as conn:
            assert authenticate(conn, key["token"], now()) is None

        # Operators' changes are audited as theirs: no key, from the CLI.
        lines = ok(run("audit", "--tenant", "acme", "-o", "jsonl", url=url)).splitlines()
        log = [json.loads(line) for line in lines]
        assert [e["action"] for e in log] == ["key.revoked", "key.created", "key.created"]
        assert {(e["key_id"], e["client_address"]) for e in log} == {(None, "cli")}
        assert log[0]["target_id"] == key["id"]
        assert key["token"] not in str(log)
        revocations = ok(run("audit", "--action", "key.revoked", url=url))
        assert key["id"] in revocations
        assert "key.created" not in revocations
        assert run("audit", "--tenant", "nobody", url=url).exit_code == 1
    finally:
        db.dispose()

    unknown_scope = run("keys", "create", "-t", "acme", "-s", "runs:everything", url=url)
    assert unknown_scope.exit_code == 1
    assert "unknown scope" in unknown_scope.stderr
    no_tenant = run("keys", "list", "--tenant", "nobody", url=url)
    assert no_tenant.exit_code == 1
    assert "tenant 'nobody' not found" in no_tenant.stderr
    no_key = run("keys", "revoke", "01934a5e-0000-7000-8000-000000000000", url=url)
    assert no_key.exit_code == 1


def test_automations_on_the_database_with_tenant(url: str, tmp_path: Path) -> None:
    ok(run("tenants", "create", "acme", url=url))
    path = tmp_path / "automation.yaml"
    path.write_text(yaml.safe_dump(DEFINITION))

    first = ok(run("automations", "apply", "-f", str(path), "--tenant", "acme", url=url))
    assert "created automation order-follow-up (version 1" in first
    # Applying the same file again changes nothing: no new version.
    again = run("automations", "apply", "-f", str(path), "-t", "acme", "-o", "json", url=url)
    second = json.loads(ok(again))
    assert second["version"] == 1
    assert "unchanged automation order-follow-up (version 1" in again.stderr
    diff = run("automations", "diff", "-f", str(path), "-t", "acme", url=url)
    assert (diff.exit_code, diff.stdout.split(":")[0]) == (0, "no changes")

    changed = {**DEFINITION, "steps": [{**DEFINITION["steps"][0], "vars": {"greeting": "hi"}}]}
    path.write_text(yaml.safe_dump(changed))
    diff = run("automations", "diff", "-f", str(path), "-t", "acme", url=url)
    assert diff.exit_code == 6
    assert "-    greeting: hello\n+    greeting: hi" in diff.stdout
    assert "updated automation order-follow-up (version 2" in ok(
        run("automations", "apply", "-f", str(path), "-t", "acme", url=url)
    )

    listed = json.loads(ok(run("automations", "list", "-t", "acme", "-o", "json", url=url)))
    assert [(a["name"], a["version"]) for a in listed["items"]] == [("order-follow-up", 2)]
    assert (listed["total"], listed["next_cursor"]) == (1, None)
    shown = ok(run("automations", "show", "order-follow-up", "-t", "acme", url=url))
    assert "greeting: hi" in shown
    args = ["automations", "show", second["id"], "-t", "acme", "--version", "1", "-o", "json"]
    old = json.loads(ok(run(*args, url=url)))
    assert (old["version"], old["definition"]["steps"][0]["vars"]) == (1, {"greeting": "hello"})

    as_json = tmp_path / "other.json"
    as_json.write_text(json.dumps({**DEFINITION, "name": "other"}))
    assert "created automation other" in ok(
        run("automations", "apply", "-f", str(as_json), "-t", "acme", url=url)
    )
    deleted = run("automations", "delete", "other", "-t", "acme", url=url)
    assert "deleted automation other" in ok(deleted) + deleted.stderr
    gone = run("automations", "show", "other", "-t", "acme", url=url)
    assert (gone.exit_code, "not found" in gone.stderr) == (1, True)


def test_invalid_definition_file_stores_nothing(url: str, tmp_path: Path) -> None:
    ok(run("tenants", "create", "acme", url=url))
    path = tmp_path / "two.yaml"
    bad = {"name": "bad", "steps": [{"key": "a", "type": "nope"}]}
    worse = {"name": "worse", "steps": [{"key": "a", "type": "set", "depends_on": ["b"]}]}
    # Three documents, the last two invalid: none is saved, and both are reported.
    path.write_text(
        yaml.safe_dump(DEFINITION) + "---\n" + yaml.safe_dump(bad) + "---\n" + yaml.safe_dump(worse)
    )
    result = run("automations", "apply", "-f", str(path), "-t", "acme", url=url)
    assert result.exit_code == 1
    assert "documents.1.steps.0.type: unknown step type 'nope'" in result.stderr
    assert "documents.2.steps.0.depends_on" in result.stderr
    db = Database(url)
    try:
        with db.read() as conn:
            assert conn.execute(automations.select()).first() is None
            assert conn.execute(automation_versions.select()).first() is None
    finally:
        db.dispose()

    missing = run("automations", "apply", "-f", str(tmp_path / "nope.yaml"), "-t", "acme", url=url)
    assert missing.exit_code == 1
    assert "cannot read" in missing.stderr
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("steps: [unclosed")
    broken = run("automations", "apply", "-f", str(garbage), "-t", "acme", url=url)
    assert broken.exit_code == 1
    assert "not valid YAML" in broken.stderr


def test_apply_refuses_a_private_url_unless_the_environment_allows_it(
    url: str, tmp_path: Path
) -> None:
    ok(run("tenants", "create", "acme", url=url))
    path = tmp_path / "call.yaml"
    call = {"key": "call", "type": "http_request", "url": "http://127.0.0.1:9000/hook"}
    path.write_text(yaml.safe_dump({"name": "call", "steps": [call]}))
    refused = run("automations", "apply", "-f", str(path), "-t", "acme", url=url)
    assert refused.exit_code == 1
    assert "steps.0.url: 127.0.0.1 is an address this server does not connect to" in refused.stderr
    allowed = run(
        "automations", "apply", "-f", str(path), "-t", "acme",
        url=url, env={"CONVEYOR_EGRESS_ALLOW": "127.0.0.1/32"},
    )  # fmt: skip
    assert "created automation call" in ok(allowed)


def test_dev_allows_loopback_and_says_so_unless_egress_allow_is_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="conveyor.cli"):
        dev = dev_egress(Settings(database_url="sqlite://"))
    assert dev.egress_policy().url_refusal("http://127.0.0.1:8080/") is None
    assert dev.egress_policy().url_refusal("http://[::1]:8080/") is None
    assert dev.egress_policy().url_refusal("http://10.0.0.1/") is not None
    assert "loopback" in caplog.text
    # Set, even to empty, the variable replaces the default in dev too.
    caplog.clear()
    strict = dev_egress(Settings(database_url="sqlite://", egress_allow=""))
    assert strict.egress_policy().url_refusal("http://127.0.0.1:8080/") is not None
    assert caplog.text == ""


def test_every_option_shows_its_environment_variable() -> None:
    commands = [
        ["migrate"],
        ["serve"],
        ["worker"],
        ["dev"],
        ["tenants", "create"],
        ["tenants", "list"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["audit"],
        ["automations", "apply"],
        ["automations", "list"],
        ["automations", "show"],
        ["automations", "diff"],
        ["automations", "versions"],
        ["automations", "delete"],
        ["login"],
        ["trigger"],
        *(
            ["dry-runs", c]
            for c in ("create", "show", "results", "result", "delete-result", "cancel")
        ),
        *(["templates", c] for c in ("apply", "list", "show", "versions", "render", "delete")),
        *(["contacts", c] for c in ("list", "show", "upsert", "replace", "patch", "delete")),
        ["settings", "show"],
        ["settings", "set"],
        ["messages", "list"],
        ["messages", "show"],
        ["events", "list"],
        ["events", "show"],
    ]
    for command in commands:
        help_text = ok(run(*command, "--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}))
        options = [w for w in help_text.split() if w.startswith("--") and w != "--help"]
        assert help_text.count("env var: CONVEYOR_") == len(set(options)), (command, help_text)


def test_dev_key_is_kept_and_reused(url: str, tmp_path: Path) -> None:
    db = Database(url)
    key_file = tmp_path / "dev-key"
    try:
        token = ensure_dev_key(db, key_file)
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert key_file.read_text().strip() == token
        assert ensure_dev_key(db, key_file) == token
        with db.read() as conn:
            principal = authenticate(conn, token, now())
        assert principal is not None
        assert principal.scopes == set(ALL_SCOPES)
        # A key file that no longer matches a live key is replaced.
        key_file.write_text("cvk_stale\n")
        fresh = ensure_dev_key(db, key_file)
        assert fresh != token
        assert key_file.read_text().strip() == fresh
    finally:
        db.dispose()
