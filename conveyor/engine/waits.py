"""Waits for events: delivering an ingested event to the runs waiting for it.

The ``wait_for_event`` step type is being built (issue 4); until it parks
runs, no wait row exists and delivery has nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection


def deliver_event(
    conn: Connection, tenant_id: str, event: Mapping[str, Any], now: datetime
) -> int:
    """Offer a newly stored event to the open waits it matches; return how many it resumed.

    ``event`` has ``id``, ``name``, ``contact_id``, ``identity``, ``payload`` and
    ``occurred_at``. Runs in the ingesting transaction.
    """
    return 0
