"""workers' heartbeat rows

Each `conveyor worker` (and `conveyor dev`'s worker) writes a row as it
starts, updates it on every heartbeat and deletes it on a clean stop; a row
not seen for CONVEYOR_WORKER_DEAD_SECONDS belongs to a dead worker and is
pruned by later workers. `conveyor status` reads it. Not a tenant's table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("slots_busy", sa.Integer(), nullable=False),
        sa.Column("slots_total", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index("ix_workers_last_seen_at", ["last_seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index("ix_workers_last_seen_at")
    op.drop_table("workers")
