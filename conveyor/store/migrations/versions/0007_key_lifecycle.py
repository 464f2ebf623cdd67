"""key lifecycle, audit log, idempotency records per key

API keys get an optional expiry and the time of their last use; an audit log
records key creation, revocation and channel-setting changes; header
idempotency records belong to the key that made them. Records made before
this migration named no key: they are dropped (they last 24 hours, and a
trigger's run keeps its own idempotency key regardless).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONType, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("key_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_log_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_tenant_id_id", "audit_log", ["tenant_id", "id"], unique=False)
    op.execute("DELETE FROM idempotency_records")
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.Uuid(as_uuid=False), nullable=False))
        batch_op.drop_constraint("uq_idempotency_records_tenant_id_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_idempotency_records_tenant_id_key_id_key", ["tenant_id", "key_id", "key"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_records")
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_constraint("uq_idempotency_records_tenant_id_key_id_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_idempotency_records_tenant_id_key", ["tenant_id", "key"]
        )
        batch_op.drop_column("key_id")
    op.drop_index("ix_audit_log_tenant_id_id", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
