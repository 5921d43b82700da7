"""Bank transfers: payments waiting for transfers, and each customer's cash balance (issue 21)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bank_transfers",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column(
            "customer_id",
            sa.String(255),
            sa.ForeignKey("customers.id", name="fk_bank_transfers_customer_id_customers"),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.Column("account", sa.JSON(), nullable=True),
        sa.Column("instructions_url", sa.Text(), nullable=True),
        sa.Column("watermark_created", sa.BigInteger(), nullable=True),
        sa.Column("watermark_event_id", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bank_transfers"),
    )
    op.create_index("ix_bank_transfers_customer_id", "bank_transfers", ["customer_id"])
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("cash_balance", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("cash_balance")
    op.drop_index("ix_bank_transfers_customer_id", table_name="bank_transfers")
    op.drop_table("bank_transfers")
