"""Child runs: the runs a ``trigger_automation`` step started."""

from __future__ import annotations

from sqlalchemy import Connection, RowMapping, bindparam, select

from conveyor.store.tables import runs

# ix_runs_parent narrows to the parent's children; the key picks the step's one.
_CHILD = select(runs).where(
    runs.c.parent_run_id == bindparam("parent"), runs.c.idempotency_key == bindparam("key")
)


def find_child(conn: Connection, parent_run_id: str, idempotency_key: str) -> RowMapping | None:
    """The child run a parent's step started (found by the key derived from that step)."""
    return (
        conn.execute(_CHILD, {"parent": parent_run_id, "key": idempotency_key}).mappings().first()
    )
