"""``/api/v1/dry-runs``: follow a dry run's progress, cancel it.

A dry run is requested with ``POST /api/v1/automations/{id}/trigger`` and
``dry_run: true``; its results are under ``/api/v1/dry-run-results``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path

from conveyor.api.auth import require
from conveyor.api.deps import get_db, get_now
from conveyor.api.errors import problem_responses
from conveyor.api.routing import HygienicRoute
from conveyor.api.schemas.dry_runs import DryRun
from conveyor.domain.scopes import Scope
from conveyor.services import dry_runs as service
from conveyor.services.keys import Principal
from conveyor.store.db import Database

router = APIRouter(prefix="/api/v1/dry-runs", tags=["dry runs"], route_class=HygienicRoute)

_READ = require(Scope.DRY_RUNS_READ)
# Cancelling changes state, so a read scope will not do; it takes the scope that
# started the dry run (there is no dry-runs:write scope).
_CANCEL = require(Scope.AUTOMATIONS_TRIGGER)

DryRunRef = Path(description="the dry run's id")


@router.get("/{dry_run_id}", response_model=DryRun, responses=problem_responses(401, 403, 404))
def get_dry_run(
    dry_run_id: str = DryRunRef,
    principal: Principal = Depends(_READ),
    db: Database = Depends(get_db),
) -> dict[str, Any]:
    """One dry run: status, days and contacts done and total, results per status."""
    with db.read() as conn:
        return service.get_dry_run(conn, principal.tenant_id, dry_run_id)


@router.post(
    "/{dry_run_id}/cancel",
    response_model=DryRun,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
def cancel_dry_run(
    dry_run_id: str = DryRunRef,
    principal: Principal = Depends(_CANCEL),
    db: Database = Depends(get_db),
    now: datetime = Depends(get_now),
) -> dict[str, Any]:
    """Stop a dry run: days not yet simulated are dropped; results stored stay.

    Needs `automations:trigger`, the scope that starts dry runs. Cancelling a
    cancelled dry run is a no-op; a completed or failed one is a 409
    `dry_run_finished`.
    """
    with db.transaction() as conn:
        return service.cancel_dry_run(conn, principal.tenant_id, dry_run_id, now=now)
