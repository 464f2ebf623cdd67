"""Dry-run result use cases: list, read and delete the per-(day, contact) results.

Services take a connection and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from conveyor.domain.errors import NotFound
from conveyor.domain.times import iso
from conveyor.services.pagination import Page, page_of
from conveyor.store import dry_run_results as store
from conveyor.store.dry_run_results import Position, ResultFilters

__all__ = [
    "DryRunResultNotFound",
    "Position",
    "ResultFilters",
    "delete_result",
    "get_result",
    "list_results",
    "result_view",
]


class DryRunResultNotFound(NotFound):
    """The dry-run result was not found."""

    code = "dry_run_result_not_found"


def _id(value: Any) -> str | None:
    return str(value) if value is not None else None


def result_view(row: RowMapping) -> dict[str, Any]:
    """A result as the API shows it, in lists and alone."""
    return {
        "id": str(row["id"]),
        "dry_run_id": str(row["dry_run_id"]),
        "automation_id": str(row["automation_id"]),
        "run_at": row["run_at"],
        "profile_id": _id(row["profile_id"]),
        "result_type": row["result_type"],
        "result_id": _id(row["result_id"]),
        "status": row["status"],
        "result": row["result"],
        "arguments": row["arguments"],
        "requested_by": row["requested_by"],
        "real_run_id": _id(row["real_run_id"]),
        "agrees": row["agrees"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def list_results(
    conn: Connection,
    tenant_id: str,
    filters: ResultFilters,
    *,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> tuple[Page[dict[str, Any]], Position | None]:
    """A page of the tenant's results, newest first, and the position to continue after.

    The position is None on the last page (nothing follows it).
    """
    rows, total = store.list_results(
        conn, tenant_id, filters, limit=limit + 1, offset=offset, after=after
    )
    page = page_of([result_view(r) for r in rows], total, limit)
    last: Position | None = None
    if page.has_more:
        row = rows[limit - 1]
        last = (row["created_at"], str(row["id"]))
    return page, last


def _result(conn: Connection, tenant_id: str, result_id: str) -> RowMapping:
    row = store.get_result(conn, tenant_id, result_id)
    if row is None:
        # Another tenant's result is as unknown as one that never existed.
        raise DryRunResultNotFound(f"dry-run result {result_id} not found")
    return row


def get_result(conn: Connection, tenant_id: str, result_id: str) -> dict[str, Any]:
    """One result; ``DryRunResultNotFound`` if the tenant has none with this id."""
    return result_view(_result(conn, tenant_id, result_id))


def delete_result(conn: Connection, tenant_id: str, result_id: str) -> str | None:
    """Delete one result and its simulated run (never a real run).

    Returns:
        The id of the simulated run deleted with it, if any.

    Raises:
        DryRunResultNotFound: the tenant has no result with this id.
    """
    return store.delete_result(conn, tenant_id, _result(conn, tenant_id, result_id))
