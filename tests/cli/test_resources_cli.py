"""``conveyor automations|templates|contacts|settings`` over the HTTP API, on a live server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.cli.conftest import Live

WELCOME: dict[str, Any] = {
    "name": "welcome",
    "steps": [
        {"key": "remember", "type": "set", "vars": {"plan": "{{ trigger.payload.plan }}"}},
        {"key": "pause", "type": "delay", "duration": "PT5S", "depends_on": ["remember"]},
    ],
}


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return str(result.stdout)


def versions(live: Live, name: str) -> list[int]:
    page = live.api("GET", f"/automations/{name}/versions")
    return [v["version"] for v in page["items"]]


def test_automations_apply_is_idempotent_over_the_api(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "welcome.yaml"
    path.write_text(yaml.safe_dump(WELCOME, sort_keys=False))
    assert "created automation welcome (version 1" in ok(
        live.cli("automations", "apply", "-f", str(path))
    )
    again = live.cli("automations", "apply", "-f", str(path), "-o", "json")
    assert json.loads(ok(again)) == live.api("GET", "/automations/welcome")
    assert "unchanged automation welcome (version 1" in again.stderr
    assert versions(live, "welcome") == [1]
    same = live.cli("automations", "diff", "-f", str(path))
    assert (same.exit_code, same.stdout.startswith("no changes: automation welcome")) == (0, True)

    changed = {
        **WELCOME,
        "steps": [WELCOME["steps"][0], {**WELCOME["steps"][1], "duration": "PT9S"}],
    }
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    preview = ok(live.cli("automations", "apply", "-f", str(path), "--dry-run"))
    assert preview.startswith("would update automation welcome (version 2)")
    assert "-  duration: PT5S\n+  duration: PT9S" in preview
    assert versions(live, "welcome") == [1]  # a dry run changes nothing
    drift = live.cli("automations", "diff", "-f", str(path))
    assert drift.exit_code == 6
    assert "--- welcome (live, version 1)" in drift.stdout
    assert "updated automation welcome (version 2" in ok(
        live.cli("automations", "apply", "-f", str(path))
    )
    assert versions(live, "welcome") == [2, 1]

    listed = json.loads(ok(live.cli("automations", "list", "-o", "json")))
    assert listed == live.api("GET", "/automations", params={"limit": 1000})
    old = json.loads(ok(live.cli("automations", "show", "welcome", "--version", "1", "-o", "json")))
    assert (old["version"], old["definition"]["steps"][1]["duration"]) == (1, "PT5S")
    table = ok(live.cli("automations", "show", "welcome"))
    assert "duration: PT9S" in table


def test_automations_apply_checks_every_document_before_sending_any(
    live: Live, tmp_path: Path
) -> None:
    path = tmp_path / "two.yaml"
    bad = {"name": "bad", "steps": [{"key": "a", "type": "nope"}]}
    path.write_text(yaml.safe_dump({**WELCOME, "name": "first"}) + "---\n" + yaml.safe_dump(bad))
    refused = live.cli("automations", "apply", "-f", str(path))
    assert refused.exit_code == 1
    assert "steps.0.type: unknown step type 'nope'" in refused.stderr
    missing = live.cli("automations", "show", "first")
    assert (missing.exit_code, "automation_not_found" in missing.stderr) == (1, True)


def test_automations_delete_over_the_api(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "gone.json"
    path.write_text(json.dumps({**WELCOME, "name": "gone"}))
    ok(live.cli("automations", "apply", "-f", str(path)))
    deleted = live.cli("automations", "delete", "gone")
    assert (ok(deleted), deleted.stderr) == ("", "deleted automation gone\n")
    again = live.cli("automations", "delete", "gone")
    assert (again.exit_code, "automation_not_found" in again.stderr) == (1, True)
    # Its name is free again: the same file makes a new automation.
    assert "created automation gone (version 1" in ok(
        live.cli("automations", "apply", "-f", str(path))
    )


def test_automations_and_templates_versions(live: Live) -> None:
    live.api("POST", "/automations", json={**WELCOME, "name": "versioned"})
    live.api("PUT", "/automations/versioned", json={**WELCOME, "name": "versioned", "tags": ["b"]})
    listed = json.loads(ok(live.cli("automations", "versions", "versioned", "-o", "json")))
    assert listed == live.api("GET", "/automations/versioned/versions", params={"limit": 100})
    assert [v["version"] for v in listed["items"]] == [2, 1]
    first = live.cli("automations", "versions", "versioned", "--limit", "1")
    rows = ok(first).splitlines()
    assert rows[0].split() == ["VERSION", "CREATED", "CREATED_BY", "ID"]
    assert rows[1].split()[0] == "2"
    assert "1 of 2 versions; next page: --cursor " in first.stderr
    every = ok(
        live.cli("automations", "versions", "versioned", "--limit", "1", "--all", "-o", "jsonl")
    )
    assert [json.loads(line) for line in every.splitlines()] == listed["items"]

    for text in ("one", "two"):
        live.api(
            "PUT", "/templates/versioned", json={"channel": "push", "title": text, "body": "b"}
        )
    page = json.loads(ok(live.cli("templates", "versions", "versioned", "-o", "json")))
    assert page == live.api("GET", "/templates/versioned/versions", params={"limit": 100})
    assert [v["content"]["title"] for v in page["items"]] == ["two", "one"]
    table = ok(live.cli("templates", "versions", "versioned")).splitlines()
    assert [line.split()[:2] for line in table] == [
        ["VERSION", "CHANNEL"],
        ["2", "push"],
        ["1", "push"],
    ]
    assert max(len(line) for line in table) <= 80
    for group in ("automations", "templates"):
        missing = live.cli(group, "versions", "nope")
        assert (missing.exit_code, "not_found" in missing.stderr) == (1, True)


def test_templates_apply_list_show_render_delete(live: Live, tmp_path: Path) -> None:
    receipt = {
        "name": "receipt",
        "channel": "email",
        "subject": "Your receipt, {{ contact.attributes.first_name }}",
        "html": "<p>Order {{ trigger.payload.order_id }}</p>",
    }
    path = tmp_path / "receipt.yaml"
    path.write_text(yaml.safe_dump(receipt))
    assert "created template receipt (version 1)" in ok(
        live.cli("templates", "apply", "-f", str(path))
    )
    again = live.cli("templates", "apply", "-f", str(path), "-o", "json")
    assert json.loads(ok(again)) == live.api("GET", "/templates/receipt")
    assert "unchanged template receipt (version 1)" in again.stderr
    path.write_text(yaml.safe_dump({**receipt, "text": "Order {{ trigger.payload.order_id }}"}))
    assert "updated template receipt (version 2)" in ok(
        live.cli("templates", "apply", "-f", str(path))
    )

    listed = json.loads(ok(live.cli("templates", "list", "--channel", "email", "-o", "json")))
    assert listed == live.api("GET", "/templates", params={"channel": "email", "limit": 100})
    shown = ok(live.cli("templates", "show", "receipt"))
    assert "--- text ---\nOrder {{ trigger.payload.order_id }}" in shown

    data = '{"trigger": {"payload": {"order_id": "<42>"}}}'
    rendered = json.loads(
        ok(live.cli("templates", "render", "receipt", "--data", data, "-o", "json"))
    )
    assert rendered == {
        "subject": "Your receipt, Ada",
        "text": "Order <42>",
        "html": "<p>Order &lt;42&gt;</p>",
    }
    missing = live.cli("templates", "render", "receipt")
    assert missing.exit_code == 1
    assert "order_id" in missing.stderr
    local = ok(live.cli("templates", "render", "-f", str(path), "--data", data))
    assert "--- subject ---\nYour receipt, Ada" in local

    deleted = live.cli("templates", "delete", "receipt")
    assert deleted.exit_code == 0
    assert live.cli("templates", "show", "receipt").exit_code == 1


def test_contacts_upsert_list_show_delete(live: Live) -> None:
    created = live.cli(
        "contacts", "upsert", "--email", "Grace@Example.com", "--external-id", "g-1",
        "--attribute", "plan=pro", "--attribute", "age:=45", "-o", "json",
    )  # fmt: skip
    contact = json.loads(ok(created))
    assert "created contact" in created.stderr
    assert (contact["email"], contact["attributes"]) == (
        "grace@example.com",
        {"plan": "pro", "age": 45},
    )
    updated = live.cli("contacts", "upsert", "--external-id", "g-1", "--attribute", "plan=team")
    assert "updated contact" in updated.stderr
    assert json.loads(ok(live.cli("contacts", "show", contact["id"], "-o", "json"))) == live.api(
        "GET", f"/contacts/{contact['id']}"
    )
    filtered = json.loads(
        ok(
            live.cli(
                "contacts",
                "list",
                "--attribute",
                "plan:team",
                "--attribute",
                "age:45",
                "-o",
                "json",
            )
        )
    )
    assert [c["id"] for c in filtered["items"]] == [contact["id"]]
    assert filtered == live.api(
        "GET",
        "/contacts",
        params=[("attribute", "plan:team"), ("attribute", "age:45"), ("limit", 100)],
    )
    table = ok(live.cli("contacts", "list", "--email", "grace@example.com"))
    assert table.splitlines()[1].split()[:3] == [contact["id"], "grace@example.com", "g-1"]
    assert max(len(line) for line in table.splitlines()) <= 80

    assert live.cli("contacts", "upsert", "--attribute", "x=1").exit_code == 2
    assert live.cli("contacts", "upsert", "--email", "a@b.c", "--attribute", "bad").exit_code == 2
    ok(live.cli("contacts", "delete", contact["id"]))
    gone = live.cli("contacts", "show", contact["id"])
    assert (gone.exit_code, "contact_not_found" in gone.stderr) == (1, True)


def test_contacts_erase_asks_first_and_prints_the_counts(live: Live) -> None:
    contact = live.api("POST", "/contacts", json={"email": "erin@example.com"})
    live.api(
        "POST",
        "/events",
        json={
            "events": [
                {
                    "id": "erin-signup",
                    "name": "erin.joined",
                    "identity": {"type": "email", "value": "Erin@Example.com"},
                    "payload": {"email": "erin@example.com"},
                }
            ]
        },
    )
    # Anything but yes (here: no, then no answer at all) leaves the contact.
    for answer in ("n\n", ""):
        refused = live.cli("contacts", "erase", contact["id"], stdin=answer)
        assert refused.exit_code == 1, (refused.stdout, refused.stderr)
        assert live.api("GET", f"/contacts/{contact['id']}")["email"] == "erin@example.com"
    table = live.cli("contacts", "erase", contact["id"], stdin="y\n")
    assert "redacted.events" in ok(table).replace(" ", "")
    assert "erased contact" in table.stderr
    gone = live.cli("contacts", "show", contact["id"])
    assert (gone.exit_code, "contact_not_found" in gone.stderr) == (1, True)
    # -o json prints the API's answer; a second erasure finds nothing (exit 1).
    again = live.api("POST", "/contacts", json={"email": "erin@example.com"})
    printed = json.loads(ok(live.cli("contacts", "erase", again["id"], "--yes", "-o", "json")))
    assert set(printed) == {"contact_id", "erased", "runs_cancelled", "runs", "redacted", "removed"}
    assert (printed["contact_id"], printed["removed"]["contacts"]) == (again["id"], 1)
    assert printed["redacted"]["events"] == 0  # the first erasure left nothing of hers
    missing = live.cli("contacts", "erase", again["id"], "--yes")
    assert (missing.exit_code, "contact_not_found" in missing.stderr) == (1, True)


def test_contacts_replace_and_patch(live: Live, tmp_path: Path) -> None:
    contact = live.api(
        "POST",
        "/contacts",
        json={"email": "kay@example.com", "external_id": "k-1", "attributes": {"a": 1, "b": 2}},
    )
    path = f"/contacts/{contact['id']}"
    patched = live.cli(
        "contacts", "patch", contact["id"], "--attribute", "a:=null", "--attribute", "c=x",
        "--clear", "external_id", "-o", "json",
    )  # fmt: skip
    assert json.loads(ok(patched)) == live.api("GET", path)
    assert patched.stderr == f"patched contact {contact['id']}\n"
    after = json.loads(patched.stdout)
    assert (after["email"], after["external_id"]) == ("kay@example.com", None)
    assert after["attributes"] == {"b": 2, "c": "x"}  # merged: a removed, b kept, c added

    body = tmp_path / "kay.yaml"
    body.write_text(yaml.safe_dump({"email": "kay@example.com", "attributes": {"plan": "pro"}}))
    replaced = live.cli(
        "contacts", "replace", contact["id"], "-f", str(body), "--attribute", "age:=7",
        "--external-id", "k-2", "-o", "json",
    )  # fmt: skip
    assert json.loads(ok(replaced)) == live.api("GET", path)
    fields = json.loads(replaced.stdout)
    assert (fields["external_id"], fields["attributes"]) == ("k-2", {"plan": "pro", "age": 7})
    table = ok(live.cli("contacts", "replace", contact["id"], "--email", "kay@example.com"))
    assert table.splitlines()[0].split() == ["id", contact["id"]]
    assert live.api("GET", path)["attributes"] == {}  # what is not given is cleared

    for args, code in [
        (["patch", contact["id"]], 2),
        (["patch", contact["id"], "--clear", "colour"], 2),
        (["patch", contact["id"], "--clear", "email", "--email", "x@example.com"], 2),
        (["patch", contact["id"], "--attribute", "bad"], 2),
        (["patch", contact["id"], "--email", "not an email"], 1),
        (["replace", "01934a5e-0000-7000-8000-000000000000", "--email", "z@example.com"], 1),
    ]:
        result = live.cli("contacts", *args)
        assert (result.exit_code, result.stdout) == (code, ""), (args, result.stderr)
    assert live.api("GET", path)["email"] == "kay@example.com"


def test_settings_show_and_set(live: Live, tmp_path: Path) -> None:
    assert json.loads(ok(live.cli("settings", "show", "-o", "json"))) == live.api(
        "GET", "/settings/channels"
    )
    assert "email.from               (server default)" in ok(live.cli("settings", "show"))
    ok(live.cli("settings", "set", "email.provider=outbox", "email.from=Shop <shop@example.com>"))
    # Setting one field keeps the others.
    after = json.loads(ok(live.cli("settings", "set", "push.provider=outbox", "-o", "json")))
    assert (after["email"]["provider"], after["email"]["from"]) == (
        "outbox",
        "Shop <shop@example.com>",
    )
    assert after["push"]["provider"] == "outbox"
    unset = json.loads(ok(live.cli("settings", "set", "--unset", "email.from", "-o", "json")))
    assert (unset["email"]["from"], "from" in unset["defaults"]["email"]) == (None, True)
    assert unset["email"]["provider"] == "outbox"

    bad = live.cli("settings", "set", "email.smtp_port=many")
    assert (bad.exit_code, "must be a number" in bad.stderr) == (2, True)
    unknown = live.cli("settings", "set", "email.colour=blue")
    assert (unknown.exit_code, "email.smtp_host" in unknown.stderr) == (2, True)
    refused = live.cli("settings", "set", "email.provider=smtp")
    assert (refused.exit_code, "422" in refused.stderr) == (1, True)

    # A secret given as `-` comes from stdin; a later change keeps it (it is write-only).
    secret = live.cli(
        "settings", "set", "email.smtp_host=mail.example.com", "email.smtp_username=shop",
        "email.smtp_password=-", "-o", "json", stdin="hunter2\n",
    )  # fmt: skip
    assert json.loads(ok(secret))["email"]["smtp_password_set"] is True
    kept = json.loads(ok(live.cli("settings", "set", "email.smtp_username=shop2", "-o", "json")))
    assert (kept["email"]["smtp_username"], kept["email"]["smtp_password_set"]) == ("shop2", True)
    assert "hunter2" not in json.dumps(kept)

    body = tmp_path / "channels.yaml"
    body.write_text(yaml.safe_dump({"email": {"provider": "outbox"}}))
    replaced = json.loads(ok(live.cli("settings", "set", "-f", str(body), "-o", "json")))
    assert (replaced["email"]["provider"], replaced["push"]["provider"]) == ("outbox", None)


def test_events_and_messages_list_and_show(live: Live) -> None:
    live.api("PUT", "/templates/hello", json={"channel": "email", "subject": "Hi", "text": "Hello"})
    mailer = {
        "name": "mailer",
        "trigger": {"type": "event", "event": "signed.up"},
        "steps": [{"key": "mail", "type": "send_email_template", "template": "hello"}],
    }
    live.api("POST", "/automations", json=mailer)
    sent = live.cli(
        "events", "send", "--name", "signed.up", "--id", "su-1",
        "--identity-email", "lin@example.com", "-o", "json",
    )  # fmt: skip
    (result,) = json.loads(ok(sent))["results"]
    (started,) = result["runs_started"]
    followed = ok(live.cli("runs", "events", started["run_id"], "--follow"))
    assert "run.completed" in followed.splitlines()[-1]

    events = json.loads(ok(live.cli("events", "list", "--name", "signed.up", "-o", "json")))
    assert events == live.api("GET", "/events", params={"name": "signed.up", "limit": 100})
    assert [e["id"] for e in events["items"]] == ["su-1"]
    assert json.loads(ok(live.cli("events", "show", "su-1", "-o", "json"))) == live.api(
        "GET", "/events/su-1"
    )

    messages = json.loads(
        ok(live.cli("messages", "list", "--run-id", started["run_id"], "-o", "json"))
    )
    assert messages == live.api(
        "GET", "/messages", params={"run_id": started["run_id"], "limit": 100}
    )
    (message,) = messages["items"]
    assert (message["recipient"], message["provider"]) == ("lin@example.com", "outbox")
    shown = ok(live.cli("messages", "show", message["id"]))
    assert "--- subject ---\nHi" in shown
    assert json.loads(ok(live.cli("messages", "show", message["id"], "-o", "json"))) == live.api(
        "GET", f"/messages/{message['id']}"
    )
    table = ok(live.cli("messages", "list"))
    assert table.splitlines()[1].split()[:4] == [message["id"], "email", "sent", "lin@example.com"]


def test_automations_on_the_database_print_what_the_api_prints(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "parity.json"
    path.write_text(json.dumps({**WELCOME, "name": "parity"}))
    on_db = ["-t", "acme", "--database-url", live.db.url.render_as_string(hide_password=False)]
    applied = json.loads(
        ok(live.cli("automations", "apply", "-f", str(path), *on_db, "-o", "json"))
    )
    over_api = json.loads(ok(live.cli("automations", "show", "parity", "-o", "json")))
    assert (
        applied
        == over_api
        == json.loads(ok(live.cli("automations", "show", "parity", *on_db, "-o", "json")))
    )
    listed = json.loads(ok(live.cli("automations", "list", *on_db, "-o", "json")))
    assert listed["items"] == live.api("GET", "/automations", params={"limit": 1000})["items"]
