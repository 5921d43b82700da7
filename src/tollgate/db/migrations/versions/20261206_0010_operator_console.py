"""The operator console: operators, their sessions and sign-in tries, charges' payment method,
and the indexes behind the console's lists and a customer's timeline

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INDEXES = (
    ("ix_audit_log_object_id_at", "audit_log", ["object_id", "at"]),
    ("ix_app_events_customer_id_created_at", "app_events", ["customer_id", "created_at"]),
    ("ix_notifications_customer_id_created_at", "notifications", ["customer_id", "created_at"]),
    ("ix_customers_created_at_id", "customers", ["created_at", "id"]),
    ("ix_customers_email", "customers", ["email"]),
    ("ix_subscriptions_status", "subscriptions", ["status"]),
    ("ix_charges_created_at", "charges", ["created_at"]),
    ("ix_stripe_events_type_created", "stripe_events", ["type", "created"]),
)


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("csrf_secret", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name="fk_operator_sessions_operator_id_operators",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_operator_sessions"),
    )
    op.create_index("ix_operator_sessions_operator_id", "operator_sessions", ["operator_id"])
    op.create_table(
        "sign_in_attempts",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sign_in_attempts"),
    )
    op.create_index("ix_sign_in_attempts_account_at", "sign_in_attempts", ["account", "at"])
    op.create_index("ix_sign_in_attempts_address_at", "sign_in_attempts", ["address", "at"])
    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("payment_method_type", sa.String(32), nullable=True))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("charges") as batch:
        batch.drop_column("payment_method_type")
    op.drop_table("sign_in_attempts")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
