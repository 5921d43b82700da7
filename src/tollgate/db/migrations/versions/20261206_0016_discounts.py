"""Discounts in the mirror: on subscriptions and invoices, with their coupons' terms (issue 20)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("discount_ids", sa.JSON(), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("subtotal", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("discount_amounts", sa.JSON(), nullable=True))
    op.create_table(
        "discounts",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("subscription_id", sa.String(255), nullable=True),
        sa.Column("coupon_id", sa.String(255), nullable=False),
        sa.Column("catalog_coupon", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("percent_off", sa.String(16), nullable=True),
        sa.Column("amount_off", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("amounts_off", sa.JSON(), nullable=True),
        sa.Column("duration", sa.String(16), nullable=False),
        sa.Column("duration_in_months", sa.Integer(), nullable=True),
        sa.Column("promotion_code", sa.String(255), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ends_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_discounts_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_discounts"),
    )
    op.create_index("ix_discounts_customer_id", "discounts", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_discounts_customer_id", table_name="discounts")
    op.drop_table("discounts")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("discount_amounts")
        batch.drop_column("subtotal")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("discount_ids")
