"""A reconciliation run may be of one object (a drift checked again from the console or
`tollgate reconcile --object`): the run keeps which

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.add_column(sa.Column("object_type", sa.String(16), nullable=True))
        batch.add_column(sa.Column("object_id", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.drop_column("object_id")
        batch.drop_column("object_type")
