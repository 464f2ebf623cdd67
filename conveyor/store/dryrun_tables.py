"""Tables of dry runs: the request with its progress, and one result per (day, contact).

They share ``conveyor.store.tables.metadata`` (imported from ``tables``).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table

from conveyor.store.tables import metadata, tenant_column, uuid_column
from conveyor.store.types import JSONType, UTCDateTime

dry_runs = Table(
    "dry_runs",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("automation_id", ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
    uuid_column("version_id", nullable=False),
    # queued | running | completed | failed | cancelled
    Column("status", String(16), nullable=False),
    Column("start_date", String(10), nullable=False),  # YYYY-MM-DD, inclusive
    Column("end_date", String(10), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("profile_ids", JSONType),
    Column("arguments", JSONType, nullable=False),
    Column("requested_by", String(200)),
    Column("days_total", Integer, nullable=False),
    Column("days_done", Integer, nullable=False),
    Column("contacts_total", Integer, nullable=False),
    Column("contacts_done", Integer, nullable=False),
    Column("counts", JSONType, nullable=False),  # {success, failed, skipped}
    Column("error", JSONType),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Index("ix_dry_runs_tenant_created", "tenant_id", "created_at", "id"),
)

dry_run_results = Table(
    "dry_run_results",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("dry_run_id", ForeignKey("dry_runs.id", ondelete="CASCADE"), nullable=False),
    uuid_column("automation_id", nullable=False),
    Column("run_at", String(10), nullable=False),  # the simulated day, YYYY-MM-DD
    uuid_column("profile_id"),  # the contact
    Column("result_type", String(32), nullable=False),  # "run": the simulated run record
    uuid_column("result_id"),
    Column("status", String(16), nullable=False),  # success | failed | skipped
    Column("result", JSONType, nullable=False),
    Column("arguments", JSONType, nullable=False),
    Column("requested_by", String(200)),
    # A real run of the same automation for that contact and day, and whether
    # the simulation reached the same steps and messages.
    uuid_column("real_run_id"),
    Column("agrees", Boolean),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_dry_run_results_tenant_created", "tenant_id", "created_at", "id"),
    Index("ix_dry_run_results_automation_day", "tenant_id", "automation_id", "run_at"),
    Index("ix_dry_run_results_profile", "tenant_id", "profile_id"),
    Index("ix_dry_run_results_dry_run", "dry_run_id", "run_at", "profile_id"),
)
