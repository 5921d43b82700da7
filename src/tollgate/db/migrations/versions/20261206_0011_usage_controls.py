"""Usage controls: consume answers, reservations (held units), voided usage

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "usage_consumptions",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_consumptions"),
    )
    op.create_table(
        "usage_reservations",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("committed", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_usage_reservations"),
    )
    op.create_index(
        "ix_usage_reservations_status_expires_at", "usage_reservations", ["status", "expires_at"]
    )
    op.create_table(
        "usage_voids",
        sa.Column("event_id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("voided_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_usage_voids"),
    )
    with op.batch_alter_table("usage_counters") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("usage_pending") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_pending") as batch:
        batch.drop_column("held")
    with op.batch_alter_table("usage_counters") as batch:
        batch.drop_column("held")
    op.drop_table("usage_voids")
    op.drop_index("ix_usage_reservations_status_expires_at", "usage_reservations")
    op.drop_table("usage_reservations")
    op.drop_table("usage_consumptions")
