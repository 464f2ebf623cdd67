"""``/ui/runs``: the runs list with its filters, all in the URL, and cursor pagination."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from conveyor.domain.errors import InvalidCursor
from conveyor.domain.run_filters import TRIGGER_TYPES, PayloadFilterNeedsWindow
from conveyor.domain.scopes import Scope
from conveyor.domain.status import RunStatus
from conveyor.domain.times import iso
from conveyor.services import control, run_lists
from conveyor.store.db import Database
from conveyor.web import list_query
from conveyor.web.auth import page_principal, to_login
from conveyor.web.rendering import render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
BULK_KINDS: tuple[Literal["cancel", "replay"], ...] = ("cancel", "replay")
# The bulk buttons count exactly up to here, then say "1000+": a count reads
# each matching run (its status is in no list index beside another filter),
# and a page pays for two of them (bench/web.py, "one automation").
BULK_COUNT_CAP = 1_000


@router.get("/ui/runs", response_model=None)
def runs_page(request: Request) -> HTMLResponse | RedirectResponse:
    """The tenant's runs, newest first, filtered by the form's values."""
    principal = page_principal(request)
    if principal is None:
        return to_login(request)
    if not principal.has(Scope.RUNS_READ):
        return render(
            request,
            "error.html",
            403,
            principal=principal,
            title="Not allowed",
            message=f"This API key lacks the scope `{Scope.RUNS_READ.value}`.",
        )
    params = {k: request.query_params.getlist(k) for k in request.query_params}
    db: Database = request.app.state.db
    query = list_query.parse(params, request.app.state.clock.now())
    page: dict[str, Any] = {"items": [], "total": 0, "total_exact": True, "next_cursor": None}
    counts: dict[str, tuple[int, bool]] = {}
    filters = query.filters
    now = request.app.state.clock.now()
    if not query.errors:
        try:
            with db.read() as conn:
                filters = run_lists.by_automation_id(conn, principal.tenant_id, query.filters)
                page = run_lists.list_runs(
                    conn, principal.tenant_id, filters, limit=PAGE_SIZE, cursor=query.cursor
                )
                if principal.has(Scope.RUNS_WRITE):
                    for kind in BULK_KINDS:
                        counts[kind] = control.bulk_count(
                            conn,
                            principal.tenant_id,
                            kind,
                            filters,
                            now,
                            cap=BULK_COUNT_CAP,
                            listed=(page["total"], page["total_exact"]),
                        )
        except InvalidCursor:
            query.errors.append("cursor: this page link is not valid any more; start again")
        except PayloadFilterNeedsWindow:
            query.errors.append(
                "payload: on this server (SQLite) a payload search needs a time window; "
                "choose one under “Created in the last”, or a start time"
            )
    return render(
        request,
        "runs.html",
        400 if query.errors else 200,
        principal=principal,
        title="Runs",
        query=query,
        page=page,
        statuses=[str(s) for s in RunStatus],
        trigger_types=TRIGGER_TYPES,
        windows=list(list_query.WINDOWS),
        next_link=query.next_link(page["next_cursor"]) if page["next_cursor"] else None,
        prev_link=query.prev_link(),
        bulk=counts,
        # The page follows its runs live: the API's stream and list, with the same filters.
        api_query=list_query.api_query(query.filters),
        rendered_at=iso(now),
        # The bulk operations take the list's filters as the API's body spells them.
        bulk_filters=json.dumps(
            filters.model_dump(mode="json", exclude_defaults=True, exclude={"dry_run"})
        ),
    )
