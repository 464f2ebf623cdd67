"""``/api/v1/runs/{id}/events`` (run history, JSON or live) and ``/api/v1/runs/stream``.

This router comes before the run views in ``ROUTERS``, so ``/runs/stream`` is
not taken for the run with id ``stream``.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from sse_starlette import EventSourceResponse

from conveyor.api.auth import require
from conveyor.api.deps import get_db
from conveyor.api.errors import problem_responses
from conveyor.api.pagination import MAX_INT
from conveyor.api.routing import HygienicRoute
from conveyor.api.run_filters import run_list_filters
from conveyor.api.schemas.run_events import RunEventPage
from conveyor.api.stream_hub import StreamHub
from conveyor.api.streams import (
    EVENT_STREAM,
    change_feed,
    event_stream,
    stream_settings,
    wants_event_stream,
)
from conveyor.domain.errors import RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.run_filters import RunFilters, check_payload_window
from conveyor.domain.scopes import Scope
from conveyor.services import run_history
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/runs", tags=["runs"], route_class=HygienicRoute)

_READ = require(Scope.RUNS_READ)
# A history stream's event id: a line's `seq` (18 digits stay below 2^63).
_SEQ = re.compile(r"\s*([0-9]{1,18})\s*")
_MAX_LIMIT = 1000


def _stream_doc(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": description, "content": {EVENT_STREAM: {"schema": {"type": "string"}}}}
    }


def _bad_header(name: str, msg: str) -> RequestValidationError:
    # Typed apart: like a cursor, a resume position is only what the server sent.
    kind = "invalid_event_id"
    return RequestValidationError([{"loc": ("header", name), "msg": msg, "type": kind}])


@router.get(
    "/stream",
    response_model=None,
    responses={
        **_stream_doc("a `run` event with the run's summary each time a matching run changes"),
        **problem_responses(401, 403, 422, 429),
    },
)
def stream_runs(
    request: Request,
    filters: RunFilters = Depends(run_list_filters),
    last_event_id: str | None = Header(
        None,
        alias="Last-Event-ID",
        description="resume after this event id: `<updated_at>|<run id>`, an `id` the stream "
        "sent (anything else is a 422 `invalid_event_id`)",
    ),
    principal: Principal = Depends(_READ),
) -> EventSourceResponse:
    """Live changes of the runs matching the list filters (server-sent events), for dashboards.

    Each time a matching run's status (or anything else: `updated_at`) changes,
    an event `run` carries its summary, as in the run list. The stream starts
    with changes made after it opened; list the runs first for the current
    state. Event ids have the form `<updated_at>|<run id>`: reconnect with
    `Last-Event-ID` to get the changes after it. A change may be sent twice
    (each summary is a snapshot, so that is harmless). A comment line every
    15 s keeps the connection alive. The stream does not end by itself.
    """
    resume = None
    if last_event_id:
        try:
            resume = run_history.Position.decode(last_event_id)
        except ValueError as exc:
            raise _bad_header("Last-Event-ID", f"not an event id of this stream: {exc}") from None
    db: Database = request.app.state.db
    check_payload_window(filters, db.engine.dialect.name)
    settings = stream_settings(request.app)
    hub: StreamHub = request.app.state.stream_hub
    ticket = hub.opened(principal)  # 429 past the caps of open streams
    events = hub.changes(
        principal.tenant_id,
        filters.model_dump_json(),
        lambda: change_feed(principal.tenant_id, filters, resume, settings),
        shared=resume is None,
    )
    return event_stream(ticket.follow(events), settings)


@router.get(
    "/{run_id}/events",
    response_model=RunEventPage,
    responses={
        **_stream_doc("the history as JSON, or with `Accept: text/event-stream`, as a live stream"),
        **problem_responses(401, 403, 404, 422, 429),
    },
)
def run_events(
    request: Request,
    run_id: str = Path(description="the run's id"),
    after: int = Query(0, ge=0, le=MAX_INT, description="only lines after this `seq`"),
    limit: int = Query(100, ge=1, le=_MAX_LIMIT, description="page size (JSON)"),
    accept: str | None = Header(None, include_in_schema=False),
    last_event_id: str | None = Header(
        None,
        alias="Last-Event-ID",
        description="resume the stream after this `seq` (an `id` the stream sent)",
        # Empty is as good as absent (what a browser sends before any id).
        json_schema_extra={"pattern": f"^({_SEQ.pattern})?$"},
    ),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> Any:
    """The run's history, oldest first: `{items: [{seq, type, step_key, data, created_at}]}`.

    As JSON, a page of `limit` lines after `after`; `next_after` is the `after`
    of the next page (null on the last). With `Accept: text/event-stream`, a
    live stream (server-sent events): the history, then each new line as it
    is written; each event's `id` is the line's `seq`, its `event` the line's
    `type` and its `data` the line as JSON. Every line of the JSON history is
    sent, those written after the run's terminal line (`run.completed`,
    `run.completed-with-errors`, `run.failed`, `run.exhausted`, `run.timed-out`,
    `run.cancelled`) too, such as `wait.late_event_ignored` or `run.retried`.
    For a run already finished, the stream sends its whole history and ends;
    for one that finishes while streamed, it ends 5 s after the terminal line.
    Resume after a `seq` with `Last-Event-ID` (which wins) or `after`. A
    comment line every 15 s keeps the connection alive.
    """
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    run_id = str(UUID(run_id))
    if last_event_id:  # checked (and it wins) whichever way the history is asked for
        seq = _SEQ.fullmatch(last_event_id)
        if seq is None:
            raise _bad_header("Last-Event-ID", "must be the `seq` of a history line")
        after = int(seq.group(1))
    if not wants_event_stream(accept):
        with db.read() as conn:
            return run_history.history_page(
                conn, principal.tenant_id, run_id, after=after, limit=limit
            )
    with db.read() as conn:
        run_history.check_run(conn, principal.tenant_id, run_id)
    hub: StreamHub = request.app.state.stream_hub
    ticket = hub.opened(principal)  # 429 past the caps of open streams
    settings = stream_settings(request.app)
    return event_stream(ticket.follow(hub.history(run_id, after)), settings)
