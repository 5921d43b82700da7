"""Usage controls: consume answers, reservations (held units), voided usage, meter adjustments

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
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


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
    op.create_table(
        "meter_adjustments",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("stripe_customer_id", ID, nullable=False),
        sa.Column("stripe_account", ID, nullable=True),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("cancel_identifier", sa.String(100), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_meter_adjustments"),
        sa.UniqueConstraint("cancel_identifier", name="uq_meter_adjustments_cancel_identifier"),
    )
    op.create_index("ix_meter_adjustments_status", "meter_adjustments", ["status"])
    op.create_table(
        "spend_caps",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_spend_caps"),
    )
    op.create_table(
        "usage_alerts",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_alerts"),
    )
    op.create_index("ix_usage_alerts_customer_id", "usage_alerts", ["customer_id"])
    op.create_table(
        "usage_alert_firings",
        sa.Column("alert_id", ID, nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", "period_start", name="pk_usage_alert_firings"),
    )
    op.create_table(
        "auto_topups",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("below", sa.BigInteger(), nullable=False),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_auto_topups"),
    )
    op.create_table(
        "topup_attempts",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_intent", ID, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_topup_attempts"),
    )
    op.create_index("ix_topup_attempts_status", "topup_attempts", ["status"])
    with op.batch_alter_table("usage_counters") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("window_start", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("window_value", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("usage_pending") as batch:
        batch.add_column(sa.Column("held", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_pending") as batch:
        batch.drop_column("held")
    with op.batch_alter_table("usage_counters") as batch:
        batch.drop_column("window_value")
        batch.drop_column("window_start")
        batch.drop_column("held")
    op.drop_index("ix_topup_attempts_status", "topup_attempts")
    op.drop_table("topup_attempts")
    op.drop_table("auto_topups")
    op.drop_table("usage_alert_firings")
    op.drop_index("ix_usage_alerts_customer_id", "usage_alerts")
    op.drop_table("usage_alerts")
    op.drop_table("spend_caps")
    op.drop_index("ix_meter_adjustments_status", "meter_adjustments")
    op.drop_table("meter_adjustments")
    op.drop_table("usage_voids")
    op.drop_index("ix_usage_reservations_status_expires_at", "usage_reservations")
    op.drop_table("usage_reservations")
    op.drop_table("usage_consumptions")
