"""Reconciliation reports and their drifts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=True),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("healed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_runs"),
        sa.UniqueConstraint("scheduled_for", name="uq_reconciliation_runs_scheduled_for"),
    )

    op.create_table(
        "reconciliation_drifts",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", AUTO_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", ID, nullable=False),
        sa.Column("stripe_account", ID, nullable=True),
        sa.Column("local", sa.JSON(), nullable=True),
        sa.Column("stripe", sa.JSON(), nullable=True),
        sa.Column("healed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_drifts"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_runs.id"],
            name="fk_reconciliation_drifts_run_id_reconciliation_runs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_reconciliation_drifts_run_id", "reconciliation_drifts", ["run_id"])
    op.create_index(
        "ix_reconciliation_drifts_object", "reconciliation_drifts", ["object_type", "object_id"]
    )


def downgrade() -> None:
    op.drop_table("reconciliation_drifts")
    op.drop_table("reconciliation_runs")
