"""A client generated from /openapi.json works on the first try against a real server.

`openapi-python-client` lives in its own virtualenv (`.venv-codegen`, made by
`make test` / `make codegen`, pinned by constraints-codegen.txt). The test
generates a client from the served document and drives it, in that
virtualenv's interpreter, against a real server: create an automation, trigger
runs, list them, retry a failed one, and read a 422 as a ValidationProblem.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
from pathlib import Path

import httpx

from conveyor.clock import SystemClock
from conveyor.domain.scopes import ALL_SCOPES
from conveyor.engine.worker import Worker
from conveyor.services import keys as key_service
from conveyor.services import tenants as tenant_service
from conveyor.settings import Settings
from conveyor.store.db import Database
from tests.api.helpers import make_client
from tests.api.live import live_server

ROOT = Path(__file__).resolve().parents[2]
CODEGEN = ROOT / ".venv-codegen" / "bin"

# Runs in .venv-codegen with the generated package importable as `client`.
DRIVE = textwrap.dedent(
    """
    import json, sys
    from client import AuthenticatedClient
    from client.api.automations import create_automation, trigger_automation
    from client.api.runs import list_runs, get_run
    from client.api.run_control import retry_run
    from client.models import (
        AutomationDefinition, RetryRequest, RunStatus, TriggerRequest, ValidationProblem,
    )

    base_url, token, phase = sys.argv[1], sys.argv[2], sys.argv[3]
    api = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    out = {}
    if phase == "create":
        definition = AutomationDefinition.from_dict({
            "name": "divide",
            "steps": [
                {"key": "check", "type": "condition", "expression": "trigger.payload.d != 0"},
                {"key": "div", "type": "set", "vars": {"q": "{{ 10 // trigger.payload.d }}"}},
            ],
        })
        created = create_automation.sync(client=api, body=definition)
        out["automation"] = created.name
        good = trigger_automation.sync(
            automation_id="divide", client=api, body=TriggerRequest.from_dict({"payload": {"d": 2}})
        )
        bad = trigger_automation.sync(
            automation_id="divide", client=api, body=TriggerRequest.from_dict({"payload": {"d": 0}})
        )
        out["runs"] = [good.id, bad.id]
        invalid = create_automation.sync_detailed(
            client=api, body=AutomationDefinition.from_dict({"name": "x", "steps": [
                {"key": "a", "type": "set", "vars": {}, "depends_on": ["nowhere"]}]})
        )
        out["invalid_status"] = invalid.status_code.value
        assert isinstance(invalid.parsed, ValidationProblem), type(invalid.parsed)
        out["invalid_errors"] = [e.type_ for e in invalid.parsed.errors]
    else:
        page = list_runs.sync(client=api, status=[RunStatus.FAILED], limit=10)
        failed = page.items[0]
        out["failed"] = failed.id
        retried = retry_run.sync(run_id=failed.id, client=api, body=RetryRequest.from_dict({}))
        out["retry"] = retried.id
        out["retry_of"] = get_run.sync(run_id=retried.id, client=api).to_dict().get("retry_of")
        out["listed"] = sorted(str(r.id) for r in list_runs.sync(client=api, limit=100).items)
    print(json.dumps(out, default=str))  # ids are UUID objects in the generated models
    """
)


GENERATE = ("--path", "openapi.json", "--meta", "none", "--output-path", "client")


def _codegen(tool: str) -> Path:
    path = CODEGEN / tool
    assert path.exists(), (
        f"{path} is missing: run `make codegen` (make test does) to install "
        "openapi-python-client into .venv-codegen"
    )
    return path


def _drive(tmp: Path, base_url: str, token: str, phase: str) -> dict[str, object]:
    done = subprocess.run(
        [str(_codegen("python")), "-c", DRIVE, base_url, token, phase],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the generated client failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_generated_client_creates_triggers_lists_and_retries(
    sqlite_db: Database, tmp_path: Path
) -> None:
    with sqlite_db.transaction() as conn:
        tenant = tenant_service.create_tenant(conn, "acme", now=SystemClock().now())
        _, token = key_service.create_key(
            conn, tenant_id=tenant["id"], scopes=ALL_SCOPES, label="gen", now=SystemClock().now()
        )
    app = make_client(sqlite_db).app
    with live_server(app) as base_url:
        document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
        (tmp_path / "openapi.json").write_text(json.dumps(document))
        env = {**os.environ, "PATH": f"{CODEGEN}:{os.environ.get('PATH', '')}"}
        generated = subprocess.run(
            [str(_codegen("openapi-python-client")), "generate", *GENERATE],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        # Anything it could not turn into code is a place where the document is unclear.
        assert "Warning" not in generated.stdout, generated.stdout
        created = _drive(tmp_path, base_url, token, "create")
        assert created["automation"] == "divide"
        assert created["invalid_status"] == 422
        assert created["invalid_errors"] == ["unknown_dependency"]
        settings = Settings(database_url=sqlite_db.url.render_as_string(hide_password=False))
        asyncio.run(Worker(sqlite_db, settings).run_until_idle())
        retried = _drive(tmp_path, base_url, token, "retry")
    good, bad = created["runs"]  # type: ignore[misc]
    assert retried["failed"] == bad
    assert retried["retry_of"] == bad
    assert retried["listed"] == sorted([good, bad, retried["retry"]])
