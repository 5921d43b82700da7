"""Billing pages: indexes for a customer's usage history and invoice list

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The billing page's chart and GET …/usage/history read a customer's events of one meter
    # in a time range; with `value` in the index they are read from the index alone.
    op.create_index(
        "ix_usage_events_customer_meter_time",
        "usage_events",
        ["customer_id", "meter", "occurred_at", "value"],
    )
    # GET …/invoices pages through a customer's invoices newest first.
    op.create_index("ix_invoices_customer_created", "invoices", ["customer_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_invoices_customer_created", table_name="invoices")
    op.drop_index("ix_usage_events_customer_meter_time", table_name="usage_events")
