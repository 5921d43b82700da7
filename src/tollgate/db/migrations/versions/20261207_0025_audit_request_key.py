"""Audit rows of a change made through Tollgate carry the request's key, unique: a request
repeated (at once, or while the first still answers) is audited once

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("request_key", sa.String(255), nullable=True))
    op.create_index("uq_audit_log_request_key", "audit_log", ["request_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_log_request_key", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("request_key")
