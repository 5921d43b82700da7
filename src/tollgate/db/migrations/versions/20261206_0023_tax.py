"""Tax (issue 21): each invoice's taxes apart, the tax rates they name, customers' tax status
and tax IDs

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None

ID = sa.String(255)


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("tax_exempt", sa.String(16), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("tax_amounts", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("customer_tax_exempt", sa.String(16), nullable=True))
    op.create_table(
        "tax_rates",
        sa.Column("id", ID, nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("jurisdiction", sa.String(255), nullable=True),
        sa.Column("percentage", sa.String(16), nullable=False),
        sa.Column("inclusive", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tax_rates"),
    )
    op.create_table(
        "customer_tax_ids",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("verification", sa.String(32), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("watermark_created", sa.BigInteger(), nullable=True),
        sa.Column("watermark_event_id", ID, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_tax_ids_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_customer_tax_ids"),
    )
    op.create_index("ix_customer_tax_ids_customer_id", "customer_tax_ids", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_customer_tax_ids_customer_id", table_name="customer_tax_ids")
    op.drop_table("customer_tax_ids")
    op.drop_table("tax_rates")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("customer_tax_exempt")
        batch.drop_column("tax_amounts")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("tax_exempt")
