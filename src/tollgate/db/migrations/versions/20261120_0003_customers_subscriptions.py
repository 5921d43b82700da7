"""Customers and subscriptions: Tollgate-kept customer fields, credit grants, pending plan changes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("plan", sa.String(64), nullable=True))
        batch.add_column(sa.Column("requested_currency", sa.String(3), nullable=True))
        batch.add_column(sa.Column("address", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("creation_fingerprint", sa.String(64), nullable=True))

    op.create_table(
        "credit_grants",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_grants"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_credit_grants_customer_id_customers"
        ),
        sa.UniqueConstraint("customer_id", "reason", name="uq_credit_grants_customer_id_reason"),
    )
    op.create_index("ix_credit_grants_customer_id", "credit_grants", ["customer_id"])

    op.create_table(
        "plan_changes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("subscription_id", ID, nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("interval", sa.String(16), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=True),
        sa.Column("effective_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plan_changes"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_plan_changes_customer_id_customers"
        ),
    )
    op.create_index("ix_plan_changes_customer_id", "plan_changes", ["customer_id"])
    op.create_index(
        "ix_plan_changes_status_effective_at", "plan_changes", ["status", "effective_at"]
    )


def downgrade() -> None:
    op.drop_table("plan_changes")
    op.drop_table("credit_grants")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("creation_fingerprint")
        batch.drop_column("address")
        batch.drop_column("requested_currency")
        batch.drop_column("plan")
