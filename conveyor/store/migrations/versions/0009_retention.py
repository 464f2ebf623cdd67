"""retention: indexes for pruning, the maintenance table, tenant-less tasks

`conveyor prune` and the workers' `prune` task walk finished runs by
completion time and each lineage by its root (ix_runs_completed, ix_runs_root),
and events by arrival across tenants (ix_events_received). The `prune` task
spans tenants, so a task's tenant may be null. The last prune's time and counts
are kept in `maintenance`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import IdType, JSONType, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_maintenance")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_completed", ["completed_at", "id"], unique=False)
        batch_op.create_index("ix_runs_root", ["root_run_id"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_received", ["received_at", "tenant_id", "id"], unique=False
        )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=IdType(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM tasks WHERE tenant_id IS NULL")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("tenant_id", existing_type=IdType(), nullable=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_received")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_root")
        batch_op.drop_index("ix_runs_completed")
    op.drop_table("maintenance")
