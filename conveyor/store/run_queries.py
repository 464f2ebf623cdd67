"""Run lists: the SQL behind ``GET /runs``, ``GET /automations/{id}/runs`` and bulk operations.

Lists are newest first, ``ORDER BY created_at DESC, id DESC``. Every single-filter
list has an index ending in ``(created_at, id)`` (see ``tables.py``), so a page
is a backward range scan of one index and costs the same at any table size:

* the keyset position is a row-value comparison ``(created_at, id) < (:t, :i)``,
  which PostgreSQL and SQLite (3.15+) both turn into an index range bound;
* several statuses are one ``UNION ALL`` branch per status, each a range scan of
  ``ix_runs_tenant_status_created``, merged and cut to the page; a single
  ``IN (...)`` cannot keep that index's order, so a rare status would be found
  by scanning the whole tenant;
* a tag is a join driven by ``ix_run_tags_tenant_tag_created``: a tag row's
  ``created_at`` is its run's ``created_at`` (``insert_tags`` writes them together),
  so the order and the keyset are taken from ``run_tags``. Only real runs have
  tags (a dry run's simulated runs get none: ``conveyor.dryrun`` writes no
  ``run_tags``), so a count of one tag and nothing else about the runs reads
  ``run_tags`` alone, index-only, without joining ``runs`` to check ``dry_run``.

* a payload filter (``payload.<path>=<value>``) is one more condition on
  ``runs`` (``conveyor.store.payload_match``): on PostgreSQL the planner picks
  the GIN index ``ix_runs_payload`` (a bitmap, sorted) or the list index
  (filtering as it goes) by how many runs it expects to match; on SQLite it
  filters the time window the service requires.
* from offset 1,000 on, the skipped rows are read as ids only (a deferred join),
  and whole rows are fetched for the page alone.

A page's rows are plain tuples of ``SUMMARY_COLUMNS``, read with as little work
per value as each database allows (``_page_columns``); a page of 1,000 runs is
23,000 values, and a microsecond each is a noticeable part of the answer.

``total`` is counted exactly only up to a cap: past it the count would read every
matching index entry (a million for an unfiltered list), which no page should pay
for. Each counted run costs a heap visit while no list index holds ``dry_run``
(see bench/RESULTS.md, "Runs API"); the ``dry_run`` condition is rendered as a
literal so that partial ``WHERE NOT dry_run`` indexes can serve it index-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Row,
    RowMapping,
    Select,
    String,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
)

from conveyor.domain.run_filters import RunFilters
from conveyor.domain.status import RunStatus
from conveyor.store.payload_match import payload_condition
from conveyor.store.tables import run_tags, runs, step_runs
from conveyor.store.types import IdType

Position = tuple[datetime, str]
"""A keyset position: the ``(created_at, id)`` of the last run of a page."""

TOTAL_CAP = 10_000
"""Matching runs counted exactly by default; ``list_runs`` reports ``cap + 1`` for "more"."""

SUMMARY_COLUMNS = (
    "id",
    "tenant_id",
    "automation_id",
    "automation_name",
    "version_id",
    "version_number",
    "status",
    "trigger_type",
    "trigger_source_type",
    "trigger_source_id",
    "identity",
    "concurrency_key",
    "idempotency_key",
    "retry_of",
    "root_run_id",
    "parent_run_id",
    "contact_id",
    "dry_run",
    "error",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
)
"""The run columns a summary shows, in the order of each row ``list_runs`` returns.

Not the trigger event (a payload of any size), so a page of a thousand runs
stays small, nor the columns only the engine reads.
"""
_TIMES = frozenset({"created_at", "started_at", "completed_at", "updated_at"})
# From this offset on, the skipped rows are read as ids only (see ``_Plan.page``).
_DEFER_OFFSET = 1_000


def _canonical_id(value: str) -> str | None:
    """The canonical form of an id, or None if it is not one (it then matches nothing)."""
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _id_condition(column: Any, value: str) -> ColumnElement[bool]:
    canonical = _canonical_id(value)
    # An id that is not a UUID matches no run (and must not reach PostgreSQL,
    # which would refuse to compare it with a uuid column).
    return column == canonical if canonical is not None else false()


def _run_conditions(tenant_id: str, filters: RunFilters, dialect: str) -> list[ColumnElement[bool]]:
    """The filters that apply to ``runs`` columns, except status, tag and dates."""
    conds: list[ColumnElement[bool]] = [
        runs.c.tenant_id == tenant_id,
        # A literal, not a parameter: a partial index on `NOT dry_run` can only
        # serve a query whose condition visibly implies it.
        runs.c.dry_run == (true() if filters.dry_run else false()),
    ]
    if filters.automation_id is not None:  # keep _filters_runs in step with these
        conds.append(_id_condition(runs.c.automation_id, filters.automation_id))
    if filters.contact_id is not None:
        conds.append(_id_condition(runs.c.contact_id, filters.contact_id))
    if filters.retry_of is not None:
        conds.append(_id_condition(runs.c.retry_of, filters.retry_of))
    equal = {
        "automation_name": runs.c.automation_name,
        "trigger_type": runs.c.trigger_type,
        "trigger_source_type": runs.c.trigger_source_type,
        "identity": runs.c.identity_value,
        "concurrency_key": runs.c.concurrency_key,
    }
    for name, column in equal.items():
        value = getattr(filters, name)
        if value is not None:
            conds.append(column == value)
    if filters.payload is not None:
        conds.append(payload_condition(dialect, filters.payload))
    return conds


_RUN_FILTERS = (
    "automation_id",
    "contact_id",
    "retry_of",
    "automation_name",
    "trigger_type",
    "trigger_source_type",
    "identity",
    "concurrency_key",
    "payload",
)


def _status(status: RunStatus) -> Any:
    """A status written into the SQL, not sent as a parameter.

    Statuses are very unevenly spread (a few hundred live runs beside a
    million finished ones), and a prepared statement's generic plan, made
    without the values, would count ``pending`` runs of one automation by
    reading all of that automation's runs. There are nine values, so at most
    a few statements per list shape.
    """
    return bindparam(None, str(status), String, literal_execute=True)


def _filters_runs(filters: RunFilters) -> bool:
    """Whether a filter beyond tenant, tag and dates needs the ``runs`` row."""
    return bool(filters.dry_run or filters.status) or any(
        getattr(filters, name) is not None for name in _RUN_FILTERS
    )


class _Plan:
    """One list query: what to select from, which columns order it, which conditions hold."""

    def __init__(self, tenant_id: str, filters: RunFilters, dialect: str) -> None:
        self.conds = _run_conditions(tenant_id, filters, dialect)
        # A tag alone is counted from run_tags (see the module doc).
        self.tag_only: list[ColumnElement[bool]] | None = None
        if filters.tag is not None:
            self.from_: Any = run_tags.join(runs, runs.c.id == run_tags.c.run_id)
            self.created_at: Any = run_tags.c.created_at
            self.id: Any = run_tags.c.run_id
            tag_conds = [run_tags.c.tenant_id == tenant_id, run_tags.c.tag == filters.tag]
            self.conds += tag_conds
            if not _filters_runs(filters):
                self.tag_only = tag_conds
        else:
            self.from_ = runs
            self.created_at = runs.c.created_at
            self.id = runs.c.id
        dates: list[ColumnElement[bool]] = []
        if filters.created_after is not None:
            dates.append(self.created_at >= filters.created_after)
        if filters.created_before is not None:
            dates.append(self.created_at < filters.created_before)
        self.conds += dates
        if self.tag_only is not None:
            self.tag_only += dates
        # All nine statuses is no filter at all; otherwise one branch per status.
        statuses = tuple(dict.fromkeys(filters.status))
        self.statuses: tuple[RunStatus, ...] = () if set(statuses) == set(RunStatus) else statuses

    def after(self, position: Position | None) -> list[ColumnElement[bool]]:
        """The keyset condition: strictly older than ``position`` in list order."""
        if position is None:
            return []
        created_at, run_id = position
        canonical = _canonical_id(run_id)
        if canonical is None:
            return [false()]
        bound = tuple_(
            literal(created_at, type_=self.created_at.type), literal(canonical, type_=self.id.type)
        )
        return [tuple_(self.created_at, self.id) < bound]

    def branches(
        self, columns: Sequence[Any], extra: list[ColumnElement[bool]]
    ) -> list[Select[Any]]:
        """One SELECT per status (or one for all), each in list order."""
        base = select(*columns).select_from(self.from_).where(*self.conds, *extra)
        if len(self.statuses) <= 1:
            if self.statuses:
                base = base.where(runs.c.status == _status(self.statuses[0]))
            return [base]
        return [base.where(runs.c.status == _status(s)) for s in self.statuses]

    def order(self) -> list[Any]:
        return [self.created_at.desc(), self.id.desc()]

    def page(
        self,
        columns: Sequence[Any],
        *,
        limit: int,
        offset: int,
        after: Position | None,
    ) -> Select[Any]:
        """``limit`` rows after ``offset`` rows (or after the keyset position), in list order."""
        if offset < _DEFER_OFFSET:
            return self._ordered(columns, limit=limit, offset=offset, after=after)
        # A deep offset skips its rows in the ids alone (which an index can hold),
        # and fetches whole rows for the page only.
        ids = self._ordered([self.id.label("id")], limit=limit, offset=offset, after=after)
        return (
            select(*columns)
            .select_from(self.from_)
            .where(*self.conds, self.id.in_(select(ids.subquery().c.id)))
            .order_by(*self.order())
        )

    def _ordered(
        self, columns: Sequence[Any], *, limit: int, offset: int, after: Position | None
    ) -> Select[Any]:
        branches = self.branches(columns, self.after(after))
        if len(branches) == 1:
            return branches[0].order_by(*self.order()).limit(limit).offset(offset or None)
        # Each branch is cut to what the page could need, so the merge stays small;
        # each also carries the order columns as they are (the page may select
        # them converted, see ``_page_columns``), which the merge sorts on.
        order = [self.created_at.label("order_created_at"), self.id.label("order_id")]
        cut = [
            b.add_columns(*order).order_by(*self.order()).limit(offset + limit).subquery()
            for b in branches
        ]
        merged = union_all(*(select(c) for c in cut)).subquery()
        return (
            select(*(merged.c[c.name] for c in columns))
            .order_by(merged.c.order_created_at.desc(), merged.c.order_id.desc())
            .limit(limit)
            .offset(offset or None)
        )

    def count(self, cap: int) -> Select[Any]:
        """How many runs match, counting at most ``cap`` of them.

        No order is needed here, so several statuses are one ``IN``: each value is
        its own range of the status index, read until the cap is reached.
        """
        if self.tag_only is not None:
            matching = select(literal(1)).select_from(run_tags).where(*self.tag_only)
            return select(func.count()).select_from(matching.limit(cap).subquery())
        matching = select(literal(1)).select_from(self.from_).where(*self.conds)
        if self.statuses:
            matching = matching.where(runs.c.status.in_([_status(s) for s in self.statuses]))
        return select(func.count()).select_from(matching.limit(cap).subquery())


def _page_columns(postgresql: bool, tag: bool) -> list[Any]:
    """``SUMMARY_COLUMNS`` as a page selects them, each read with as little work as can be.

    Times come as naive UTC datetimes: the summary writes them without an
    offset to compute and strip. On PostgreSQL ``timezone('UTC', ...)``
    makes them so, and ids are typed as the text psycopg already reads them
    as (``db._uuids_as_text``), so SQLAlchemy runs no processor on any value
    (``UTCDateTime`` would look at each time, ``Uuid`` would ``str()`` each
    id). On SQLite the times are read as the naive UTC text they are stored
    as, without ``UTCDateTime`` adding the zone. Under a tag, the list order
    is the tag row's: its ``created_at`` and ``id`` are selected.
    """
    source = {c.name: c for c in runs.c}
    if tag:
        source["created_at"], source["id"] = run_tags.c.created_at, run_tags.c.run_id
    columns = []
    for name in SUMMARY_COLUMNS:
        column: ColumnElement[Any] = source[name]
        if name in _TIMES and postgresql:
            column = type_coerce(func.timezone(literal_column("'UTC'"), column), DateTime())
        elif name in _TIMES:
            column = type_coerce(column, DateTime())
        elif postgresql and isinstance(column.type, IdType):
            column = type_coerce(column, String())
        columns.append(column.label(name))
    return columns


# Built once: a page's statement is built at every request.
_PAGE_COLUMNS = {(pg, tag): _page_columns(pg, tag) for pg in (False, True) for tag in (False, True)}


def list_runs(
    conn: Connection,
    tenant_id: str,
    filters: RunFilters,
    *,
    limit: int,
    offset: int | None,
    cursor: Position | None,
    count_cap: int = TOTAL_CAP,
) -> tuple[Sequence[Row[Any]], int, Position | None]:
    """One page of a tenant's runs, newest first, and how many match.

    Args:
        conn: the connection (the caller owns the transaction).
        tenant_id: whose runs.
        filters: which runs; every filter must hold.
        limit: page size.
        offset: matching runs to skip (offset paging), or None.
        cursor: the keyset position to continue after (cursor paging), or None.
        count_cap: count exactly up to this many matching runs.

    Returns:
        The page's rows, each a tuple of ``SUMMARY_COLUMNS`` (ids as strings,
        JSON columns decoded, times as naive UTC datetimes), the number of
        matching runs over all pages (``count_cap + 1`` means "more than
        ``count_cap``"), and the position after the page's last run when more
        runs follow (else None).
    """
    plan = _Plan(tenant_id, filters, conn.dialect.name)
    columns = _PAGE_COLUMNS[conn.dialect.name == "postgresql", filters.tag is not None]
    stmt = plan.page(columns, limit=limit + 1, offset=offset or 0, after=cursor)
    rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    total = int(conn.execute(plan.count(count_cap + 1)).scalar_one())
    position = None
    if more and rows:
        last = rows[-1]
        position = (last.created_at.replace(tzinfo=UTC), str(last.id))
    return rows, total, position


def iter_run_ids(
    conn: Connection,
    tenant_id: str,
    filters: RunFilters,
    *,
    after: Position | None,
    limit: int,
) -> list[tuple[str, datetime]]:
    """``(id, created_at)`` of up to ``limit`` matching runs after ``after``, newest first.

    Bulk operations walk a filter with this, passing the last pair returned as
    the next ``after``; runs created meanwhile (newer) are not picked up.
    """
    plan = _Plan(tenant_id, filters, conn.dialect.name)
    columns = [plan.id.label("id"), plan.created_at.label("created_at")]
    stmt = plan.page(columns, limit=limit, offset=0, after=after)
    return [(str(r.id), r.created_at) for r in conn.execute(stmt)]


def get_step(conn: Connection, run_id: str, step_key: str) -> RowMapping | None:
    """One step row of a run, with its whole output."""
    stmt = select(step_runs).where(step_runs.c.run_id == run_id, step_runs.c.step_key == step_key)
    return conn.execute(stmt).mappings().first()
