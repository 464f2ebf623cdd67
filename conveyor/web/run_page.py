"""``/ui/runs/{id}``: one run, its steps as a waterfall, waits, messages, history and actions.

Actions (cancel, retry, replay) are forms the page's script sends to
``/api/v1/runs/{id}/…`` with the CSRF token: the same services and scope
checks as any API client. Only the actions the key's scopes allow are
offered; the API refuses the others anyway.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import Connection

from conveyor.domain.errors import NotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.scopes import Scope
from conveyor.domain.status import RunStatus
from conveyor.services import lineage, messages, run_history
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database
from conveyor.web import waterfall
from conveyor.web.auth import page_principal, to_login
from conveyor.web.rendering import permalink, render

router = APIRouter(include_in_schema=False)

HISTORY_LIMIT = 1000  # lines shown; a longer history is linked to in full (the API)
# A retry from the failed step (and a replay) needs something that did not complete.
UNFINISHED_WORK = {"failed", "exhausted", "timed-out", "cancelled", "completed-with-errors"}


def _not_found(request: Request, principal: Principal, run_id: str) -> HTMLResponse:
    return render(
        request,
        "error.html",
        404,
        principal=principal,
        title="Run not found",
        message=f"There is no run {run_id} in this tenant.",
    )


def _message_contents(conn: Connection, tenant_id: str, detail: dict[str, Any]) -> dict[str, Any]:
    """Each sent message's rendered content, by message id (what the run page shows)."""
    out: dict[str, Any] = {}
    for m in [*detail["sent_emails"], *detail["sent_push_notifications"]]:
        try:
            out[str(m["id"])] = messages.get_message(conn, tenant_id, str(m["id"]))["content"]
        except NotFound:  # another tenant's, or gone: shown without content
            continue
    return out


def _late_events(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events that came after their wait had timed out, by wait id (from the history shown)."""
    late: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        data = line.get("data") or {}
        if line.get("type") == "wait.late_event_ignored" and "wait_id" in data:
            late.setdefault(str(data["wait_id"]), []).append(data)
    return late


def offered_actions(principal: Principal, status: str) -> dict[str, bool]:
    """Which actions the page offers: what the run's status and the key's scopes allow."""
    write = principal.has(Scope.RUNS_WRITE)
    finished = RunStatus(status).terminal
    return {
        "cancel": write and not finished,
        "retry": write and finished,  # from a step, or in full
        "retry_failed": write and status in UNFINISHED_WORK,  # and replay
        # A new payload or the latest version starts the automation anew.
        "retry_edited": write and finished and principal.has(Scope.AUTOMATIONS_TRIGGER),
    }


@router.get("/ui/runs/{run_id}", response_model=None)
def run_page(request: Request, run_id: str) -> HTMLResponse | RedirectResponse:
    """A run's page (a permalink; each step has an anchor ``#step-<key>``)."""
    principal = page_principal(request)
    if principal is None:
        return to_login(request)
    if not principal.has(Scope.RUNS_READ) or not looks_like_id(run_id):
        return _not_found(request, principal, run_id)
    run_id = str(UUID(run_id))
    db: Database = request.app.state.db
    settings: Settings = request.app.state.settings
    try:
        with db.read() as conn:
            detail = get_run_detail(
                conn, principal.tenant_id, run_id, inline_limit=settings.inline_output_bytes
            )
            history = run_history.history_page(
                conn, principal.tenant_id, run_id, after=0, limit=HISTORY_LIMIT
            )
            contents = _message_contents(conn, principal.tenant_id, detail)
            started = lineage.started_runs(conn, principal.tenant_id, run_id)
    except NotFound:
        return _not_found(request, principal, run_id)
    now = request.app.state.clock.now()
    return render(
        request,
        "run.html",
        principal=principal,
        title=f"Run {run_id}",
        run=detail,
        rows={r.key: r for r in waterfall.rows(detail, now)},
        history=history,
        late_events=_late_events(history["items"]),
        started=started,
        contents=contents,
        actions=offered_actions(principal, str(detail["status"])),
        live=not RunStatus(str(detail["status"])).terminal,
        permalink=permalink(request, f"/ui/runs/{run_id}"),
    )
