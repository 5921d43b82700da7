"""Disputes: the evidence deadline and customer of each, and the access a dispute leaves;
invoices: their tax (issue 21)

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("disputes") as batch:
        batch.add_column(sa.Column("evidence_due_by", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("customer_id", sa.String(255), nullable=True))
    op.create_index("ix_disputes_status_evidence_due_by", "disputes", ["status", "evidence_due_by"])
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("dispute_access", sa.String(16), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("tax", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("tax")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("dispute_access")
    op.drop_index("ix_disputes_status_evidence_due_by", table_name="disputes")
    with op.batch_alter_table("disputes") as batch:
        batch.drop_column("customer_id")
        batch.drop_column("evidence_due_by")
