"""The operator console's overview at 100,000 customers: trials ending, churn this month and
failed charges each read through an index of their own (bench/console.py)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_subscriptions_status_trial_end", "subscriptions", ["status", "trial_end"]),
    ("ix_subscriptions_status_ended", "subscriptions", ["status", "ended_at", "canceled_at"]),
    ("ix_charges_status_created_at", "charges", ["status", "created_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
