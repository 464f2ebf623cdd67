"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from conveyor.api.deps import get_db
from conveyor.api.errors import problem, problem_responses
from conveyor.api.routing import HygienicRoute
from conveyor.store.db import Database
from conveyor.store.migrate import schema_is_current

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"], route_class=HygienicRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and answering. Does not touch the database."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503), response_model=None)
def readyz(db: Database = Depends(get_db)) -> dict[str, str] | JSONResponse:
    """Readiness: the database answers and its schema is at this version's head; 503 otherwise.

    The schema's Alembic revision is compared with the code's: a server
    started before `conveyor migrate` ran (or after a newer one did) is not ready.
    """
    try:
        with db.read() as conn:
            current = schema_is_current(conn)
    except SQLAlchemyError as exc:
        log.warning("not ready: %s", exc.__class__.__name__, exc_info=exc)
        return problem(503, "not_ready", "the database is not reachable")
    if not current:
        log.warning("not ready: the database schema is not at this version's head")
        return problem(
            503,
            "not_ready",
            "the database schema is not at this version's: run `conveyor migrate`",
        )
    return {"status": "ok"}
