"""The succeeded charges' index by time carries currency, method and amount: the console
overview's 30 days of fees (and this month's failed charges) are read from the index alone

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_WIDE = ["status", "created_at", "currency", "payment_method_type", "amount"]


def upgrade() -> None:
    op.drop_index("ix_charges_status_created_at", table_name="charges")
    op.create_index("ix_charges_status_created_at_amounts", "charges", _WIDE)


def downgrade() -> None:
    op.drop_index("ix_charges_status_created_at_amounts", table_name="charges")
    op.create_index("ix_charges_status_created_at", "charges", ["status", "created_at"])
