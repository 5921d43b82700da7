"""The inbox's status index holds only the events still to do (pending, processing, failed):
an event applied as it arrives is inserted done and no longer writes it (issue 23)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

# As the model has it (tollgate.db.models.stripe_mirror.UNFINISHED_EVENT), kept here as text.
UNFINISHED = "status = 'pending' OR status = 'processing' OR status = 'failed'"


def upgrade() -> None:
    op.drop_index("ix_stripe_events_status_next_attempt_at", table_name="stripe_events")
    op.create_index(
        "ix_stripe_events_unfinished",
        "stripe_events",
        ["status", "next_attempt_at"],
        sqlite_where=sa.text(UNFINISHED),
        postgresql_where=sa.text(UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_events_unfinished", table_name="stripe_events")
    op.create_index(
        "ix_stripe_events_status_next_attempt_at", "stripe_events", ["status", "next_attempt_at"]
    )
