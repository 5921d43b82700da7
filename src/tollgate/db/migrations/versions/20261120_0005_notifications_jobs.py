"""Jobs: the notification and app-webhook outbox, job locks, dunning state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("dunning_access", sa.String(16), nullable=True))

    op.create_table(
        "notifications",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("cause", ID, nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.UniqueConstraint(
            "customer_id", "template", "cause", name="uq_notifications_customer_id_template_cause"
        ),
    )
    op.create_index(
        "ix_notifications_status_next_attempt_at", "notifications", ["status", "next_attempt_at"]
    )

    op.create_table(
        "app_events",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("cause", ID, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_app_events"),
    )
    op.create_index(
        "ix_app_events_status_next_attempt_at", "app_events", ["status", "next_attempt_at"]
    )

    op.create_table(
        "job_locks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_locks"),
    )


def downgrade() -> None:
    op.drop_table("job_locks")
    op.drop_table("app_events")
    op.drop_table("notifications")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("dunning_access")
