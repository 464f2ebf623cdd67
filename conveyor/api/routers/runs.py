"""``/api/v1/runs``: run views."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_settings
from conveyor.api.errors import problem_responses
from conveyor.api.schemas.runs import Run
from conveyor.domain.errors import RunNotFound
from conveyor.domain.ids import looks_like_id
from conveyor.domain.scopes import Scope
from conveyor.services.keys import Principal
from conveyor.services.runs import get_run_detail
from conveyor.settings import Settings
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

_READ = require(Scope.RUNS_READ)


@router.get(
    "/{run_id}",
    response_model=Run,
    responses=problem_responses(401, 403, 404),
)
def get_run(
    run_id: str = Path(description="the run's id"),
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """One run: trigger event, identity, steps with their attempts, and the last error.

    Step outputs over the inline limit are left out, with `result_truncated: true`
    and their `result_size`.
    """
    if not looks_like_id(run_id):
        raise RunNotFound(f"run {run_id} not found")
    with db.read() as conn:
        return get_run_detail(
            conn, principal.tenant_id, str(UUID(run_id)), inline_limit=settings.inline_output_bytes
        )
