"""tenants' own from-domains for the operator's SMTP relay

A tenant may send through the operator's SMTP relay only from domains the
operator allows it: CONVEYOR_EMAIL_FROM_DOMAINS, or the tenant's own list set
with `conveyor tenants set-from-domains` (null: the setting applies).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import JSONType

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_from_domains", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("email_from_domains")
