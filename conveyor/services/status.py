"""The operator's view of the engine (``conveyor status``): workers, queue, last prune; all tenants.

No API route serves this, and no tenant scope applies: it spans every tenant.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from conveyor.services.retention import last_prune
from conveyor.store import presence


def engine_status(conn: Connection, now: datetime, dead_after: timedelta) -> dict[str, Any]:
    """Workers alive and recently dead, the queue by task kind and the last prune, as of ``now``.

    A worker is alive while its heartbeat row was written within
    ``dead_after`` (``CONVEYOR_WORKER_DEAD_SECONDS``); a dead one's row stays
    until a live worker prunes it (``conveyor.engine.presence.KEEP_DEAD``).
    """
    workers = []
    for row in presence.list_workers(conn):
        seen_ago = (now - row["last_seen_at"]).total_seconds()
        workers.append(
            {
                **dict(row),
                "state": "alive" if seen_ago <= dead_after.total_seconds() else "dead",
                "seen_seconds_ago": round(max(seen_ago, 0.0), 1),
            }
        )
    queue = []
    for row in presence.queue_by_kind(conn, now):
        oldest = row["oldest_due_at"]
        queue.append(
            {
                "kind": row["kind"],
                "due": int(row["due"] or 0),
                "leased": int(row["leased"] or 0),
                "later": int(row["later"] or 0),
                "total": int(row["total"]),
                "oldest_due_at": oldest,
                "oldest_due_age_seconds": (
                    round((now - oldest).total_seconds(), 1) if oldest is not None else None
                ),
            }
        )
    return {
        "at": now,
        "dead_after_seconds": dead_after.total_seconds(),
        "workers_alive": sum(1 for w in workers if w["state"] == "alive"),
        "workers_dead": sum(1 for w in workers if w["state"] == "dead"),
        "workers": workers,
        "queue": queue,
        # started_at, finished_at, source (worker or cli), counts per kind; None: never pruned
        "last_prune": last_prune(conn),
    }
