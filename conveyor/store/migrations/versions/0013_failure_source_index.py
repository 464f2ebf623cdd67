"""an index on the runs a failure trigger started, by the failed run

The lineage view (`started_runs`) and erasure look up the runs an
`automation_failure` trigger started for a run by `trigger_source_id`; with no
index on it they read every failure-triggered run of the tenant (PostgreSQL)
or all the tenant's runs (SQLite). The index holds only failure-triggered runs.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

WHERE = "trigger_type = 'automation_failure'"


def upgrade() -> None:
    where = sa.text(WHERE)
    op.create_index(
        "ix_runs_failure_source",
        "runs",
        ["trigger_source_id"],
        unique=False,
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_runs_failure_source", table_name="runs")
