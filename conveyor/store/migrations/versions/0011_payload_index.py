"""a GIN index on the runs' trigger events, for the payload filter

`payload.<path>=<value>` on run lists is `trigger_event @> {"payload": ...}` on
PostgreSQL, served by a `jsonb_path_ops` GIN index. SQLite has no such index:
there the filter needs a time window, and this migration does nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_runs_payload",
        "runs",
        ["trigger_event"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"trigger_event": "jsonb_path_ops"},
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_runs_payload", table_name="runs")
