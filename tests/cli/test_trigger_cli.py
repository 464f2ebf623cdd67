"""``conveyor trigger`` and ``conveyor dry-runs`` against a live server with a running worker."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.bulk import outcome
from conveyor.cli.dry_runs import ProgressBar
from conveyor.testing.factories import make_automation
from tests.cli.conftest import Live

OK = {
    "name": "ok",
    "steps": [{"key": "a", "type": "set", "vars": {"x": "{{ trigger.payload.x }}"}}],
}
# Rendering an unknown name fails the step: a failed run without a network.
BROKEN = {
    "name": "broken",
    "steps": [{"key": "a", "type": "set", "vars": {"y": "{{ nothing.here }}"}}],
}
SHAKY = {
    "name": "shaky",
    "steps": [
        {"key": "a", "type": "set", "vars": {"y": "{{ nothing.here }}"}, "continue_on_error": True}
    ],
}
SLOW = {"name": "slow", "steps": [{"key": "nap", "type": "delay", "duration": "PT60S"}]}


@pytest.fixture(scope="module")
def server(live: Live) -> Live:
    for definition in (OK, BROKEN, SHAKY, SLOW):
        make_automation(live.db, live.tenant, definition)
    return live


def ok(result: Any) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return str(result.stdout)


def test_trigger_prints_the_new_run_as_the_api_answers(server: Live) -> None:
    args = ["trigger", "ok", "--payload", '{"x": 1}', "--idempotency-key", "k-1", "-o", "json"]
    first = json.loads(ok(server.cli(*args)))
    assert (first["automation_name"], first["status"]) == ("ok", "pending")
    # A repeat gives the first run back (as it is now), and the CLI says so.
    repeat = server.cli(*args)
    assert json.loads(ok(repeat))["id"] == first["id"]
    assert "started earlier with this idempotency key" in repeat.stderr
    answer = server.api(
        "POST", "/automations/ok/trigger", json={"payload": {"x": 1}, "idempotency_key": "k-1"}
    )
    assert (answer["id"], sorted(answer)) == (first["id"], sorted(first))

    table = ok(server.cli("trigger", "ok", "--identity", "email:ada@example.com"))
    fields = dict(line.split(None, 1) for line in table.splitlines())
    assert (fields["automation_name"], fields["status"]) == ("ok", "pending")
    run = server.api("GET", f"/runs/{fields['id']}")
    assert run["identity"] == {"type": "email", "value": "ada@example.com"}

    bad = server.cli("trigger", "ok", "--identity", "phone:123")
    assert bad.exit_code == 2
    assert "TYPE:VALUE" in bad.stderr
    missing = server.cli("trigger", "nope")
    assert missing.exit_code == 1
    assert "automation_not_found" in missing.stderr


@pytest.mark.parametrize(
    ("automation", "status", "code"),
    [("ok", "completed", 0), ("broken", "failed", 3), ("shaky", "completed-with-errors", 4)],
)
def test_trigger_wait_exits_with_the_runs_outcome(
    server: Live, automation: str, status: str, code: int
) -> None:
    result = server.cli("trigger", automation, "--payload", '{"x": 2}', "--wait", "-o", "json")
    assert result.exit_code == code, (result.stdout, result.stderr)
    run = json.loads(result.stdout)
    assert run["status"] == status
    assert run == server.api("GET", f"/runs/{run['id']}")  # the run's detail, as the API has it
    if code:
        assert f"run {run['id']} ended {status}" in result.stderr


def test_trigger_follow_prints_the_history_and_a_cancelled_run_exits_5(server: Live) -> None:
    outcome: dict[str, Any] = {}
    follower = threading.Thread(
        target=lambda: outcome.update(
            result=server.cli("trigger", "slow", "--follow", "-o", "jsonl")
        )
    )
    follower.start()
    deadline = time.monotonic() + 20
    while True:
        waiting = server.api(
            "GET", "/runs", params={"automation_name": "slow", "status": "waiting"}
        )
        if waiting["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (run,) = waiting["items"]
    server.api("POST", f"/runs/{run['id']}/cancel", json={"reason": "test"})
    follower.join(20)
    result = outcome["result"]
    assert result.exit_code == 5, (result.stdout, result.stderr)
    history = [json.loads(line) for line in result.stdout.splitlines()]
    assert history[0]["type"] == "run.created"
    assert history[-1]["type"] == "run.cancelled"
    assert history == server.api("GET", f"/runs/{run['id']}/events")["items"]


def test_runs_events_follow_exits_non_zero_for_a_failed_run(server: Live) -> None:
    failed = json.loads(server.cli("trigger", "broken", "--wait", "-o", "json").stdout)
    followed = server.cli("runs", "events", failed["id"], "--follow")
    assert followed.exit_code == 3
    assert "run.failed" in followed.stdout
    assert f"run {failed['id']} ended failed" in followed.stderr
    done = json.loads(
        server.cli("trigger", "ok", "--payload", '{"x": 4}', "--wait", "-o", "json").stdout
    )
    assert ok(server.cli("runs", "events", done["id"], "--follow")).count("\n") >= 3


def test_runs_bulk_cancel_replay_show(server: Live) -> None:
    make_automation(server.db, server.tenant, {**SLOW, "name": "nap"})
    runs = [server.api("POST", "/automations/nap/trigger")["id"] for _ in range(2)]
    cancel = ["runs", "bulk-cancel", "--automation", "nap", "--reason", "tidy", "--wait"]
    cancelled = json.loads(ok(server.cli(*cancel, "-o", "json")))
    assert (cancelled["kind"], cancelled["status"]) == ("cancel", "completed")
    assert (cancelled["matched"], cancelled["done"], cancelled["failed"]) == (2, 2, 0)
    assert cancelled["filters"]["automation_name"] == "nap"
    assert cancelled["arguments"] == {"reason": "tidy", "resend": False}
    assert {server.api("GET", f"/runs/{r}")["status"] for r in runs} == {"cancelled"}
    shown = server.cli("runs", "bulk-show", cancelled["id"], "-o", "json")
    assert json.loads(ok(shown)) == server.api("GET", f"/bulk-operations/{cancelled['id']}")
    table = ok(server.cli("runs", "bulk-show", cancelled["id"]))
    assert [line.split() for line in table.splitlines()[:3]] == [
        ["id", cancelled["id"]],
        ["kind", "cancel"],
        ["status", "completed"],
    ]

    # Without --wait: the operation as the API answered it, at once.
    replay = ["runs", "bulk-replay", "--automation", "nap", "--status", "cancelled", "--resend"]
    started = json.loads(ok(server.cli(*replay, "-o", "json")))
    assert (started["kind"], started["arguments"]["resend"]) == ("replay", True)
    assert started["filters"]["status"] == ["cancelled"]
    done = json.loads(ok(server.cli("runs", "bulk-show", started["id"], "--wait", "-o", "json")))
    assert (done["status"], done["done"]) == ("completed", 2)
    replays = server.api("GET", "/runs", params={"automation_name": "nap", "trigger_type": "retry"})
    assert sorted(r["retry_of"] for r in replays["items"]) == sorted(runs)

    missing = server.cli("runs", "bulk-show", "01934a5e-0000-7000-8000-000000000000")
    assert (missing.exit_code, "bulk_operation_not_found" in missing.stderr) == (1, True)
    refused = server.cli("runs", "bulk-cancel", "--status", "done")
    assert (refused.exit_code, "422" in refused.stderr) == (1, True)
    cases = [("completed", 0), ("completed", 1), ("failed", 0)]  # all done, some runs not, failed
    assert [outcome({"status": s, "failed": f}) for s, f in cases] == [0, 4, 3]


def _contact(server: Live) -> str:
    contact = server.api("POST", "/contacts", json={"email": "dry@example.com"})
    return str(contact["id"])


def test_dry_runs_create_wait_show_results_cancel(server: Live) -> None:
    contact = _contact(server)
    days = ["--start-date", "2026-06-01", "--end-date", "2026-06-03"]
    args = ["dry-runs", "create", "ok", "--profile-id", contact, *days]
    waited = server.cli(*args, "--payload", '{"x": 3}', "--wait", "-o", "json")
    dry_run = json.loads(ok(waited))
    assert (dry_run["status"], dry_run["days"]) == ("completed", {"done": 3, "total": 3})
    assert "\r" not in waited.stderr  # no progress bar: stderr is not a terminal
    assert json.loads(ok(server.cli("dry-runs", "show", dry_run["id"], "-o", "json"))) == dry_run

    results = json.loads(ok(server.cli("dry-runs", "results", dry_run["id"], "-o", "json")))
    assert [r["run_at"] for r in results["items"]] == ["2026-06-03", "2026-06-02", "2026-06-01"]
    assert {r["dry_run_id"] for r in results["items"]} == {dry_run["id"]}
    assert results["total"] == 3
    one = server.api("GET", f"/dry-run-results/{results['items'][0]['id']}")
    assert results["items"][0] == one  # each result as the API has it
    # Another dry run of the same automation: its results are not this one's.
    other = json.loads(ok(server.cli(*args, "--wait", "-o", "json")))
    lines = ok(server.cli("dry-runs", "results", other["id"], "-o", "jsonl")).splitlines()
    assert {json.loads(line)["dry_run_id"] for line in lines} == {other["id"]}
    table = ok(server.cli("dry-runs", "results", dry_run["id"], "--status", "success"))
    assert table.splitlines()[0].split()[:3] == ["ID", "RUN_AT", "STATUS"]
    assert len(table.splitlines()) == 4
    assert max(len(line) for line in table.splitlines()) <= 80

    finished = server.cli("dry-runs", "cancel", dry_run["id"])
    assert (finished.exit_code, "dry_run_finished" in finished.stderr) == (1, True)

    first = results["items"][0]
    found = json.loads(ok(server.cli("dry-runs", "result", first["id"], "-o", "json")))
    assert found == server.api("GET", f"/dry-run-results/{first['id']}")
    shown = ok(server.cli("dry-runs", "result", first["id"]))
    assert shown.splitlines()[0].split() == ["id", first["id"]]
    assert shown.endswith(json.dumps(first["result"], indent=2, ensure_ascii=False) + "\n")
    deleted = server.cli("dry-runs", "delete-result", first["id"])
    assert (ok(deleted), deleted.stderr) == ("", f"deleted dry-run result {first['id']}\n")
    for command in ("result", "delete-result"):
        gone = server.cli("dry-runs", command, first["id"])
        assert (gone.exit_code, "dry_run_result_not_found" in gone.stderr) == (1, True)


def test_a_dry_run_the_api_refuses_exits_1(server: Live) -> None:
    # A manual trigger needs contacts: without them the API refuses the request.
    refused = server.cli("dry-runs", "create", "ok", "--start-date", "2026-06-01")
    assert refused.exit_code == 1
    assert "invalid_dry_run" in refused.stderr or "validation_error" in refused.stderr


def test_the_progress_bar_is_drawn_on_a_terminal_only(server: Live, tmp_path: Path) -> None:
    contact = _contact(server)
    created = server.cli(
        "dry-runs", "create", "ok", "--profile-id", contact,
        "--start-date", "2026-07-01", "--end-date", "2026-07-02", "--wait", "-o", "json",
    )  # fmt: skip
    dry_run = json.loads(ok(created))
    assert ProgressBar.line(dry_run).startswith("[" + "#" * 24 + "] 2/2 days")
    halfway = {**dry_run, "status": "running", "days": {"done": 1, "total": 4}}
    assert ProgressBar.line(halfway).startswith("[" + "#" * 6 + "." * 18 + "] 1/4 days")

    conveyor = str(Path(sys.executable).with_name("conveyor"))
    env = {**os.environ, **server.env, "XDG_CONFIG_HOME": str(tmp_path)}
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [conveyor, "dry-runs", "show", dry_run["id"], "--wait", "-o", "json"],
            env=env, stdout=subprocess.PIPE, stderr=follower, timeout=60, check=False,
        )  # fmt: skip
        os.close(follower)
        drawn = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert json.loads(done.stdout)["status"] == "completed"
    assert "\r\x1b[K[" + "#" * 24 + "] 2/2 days" in drawn
