"""Usage metering and entitlements: events, counters, thresholds, meter outbox, change feed

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "customer_changes",
        sa.Column("seq", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_customer_changes"),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_events"),
    )
    op.create_table(
        "usage_counters",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=True),
        sa.Column("last_event_id", ID, nullable=True),
        sa.Column("reported", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "meter", "period_start", name="pk_usage_counters"),
    )
    op.create_table(
        "usage_thresholds",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("meter", sa.String(64), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("crossed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "meter", "period_start", "percent", name="pk_usage_thresholds"
        ),
    )
    op.create_table(
        "meter_outbox",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("stripe_customer_id", ID, nullable=False),
        sa.Column("stripe_account", ID, nullable=True),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_meter_outbox"),
    )
    op.create_index(
        "ix_meter_outbox_status_next_attempt_at", "meter_outbox", ["status", "next_attempt_at"]
    )
    op.create_index("ix_meter_outbox_identifier", "meter_outbox", ["identifier"])


def downgrade() -> None:
    op.drop_table("meter_outbox")
    op.drop_table("usage_thresholds")
    op.drop_table("usage_counters")
    op.drop_table("usage_events")
    op.drop_table("customer_changes")
