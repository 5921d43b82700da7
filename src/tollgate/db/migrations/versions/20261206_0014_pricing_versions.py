"""Pricing that changes: synced catalog versions, plan versions, plan migrations

Revision ID: 0014
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "catalog_versions",
        sa.Column("version", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("plan_versions", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_catalog_versions"),
    )
    op.create_table(
        "plan_versions",
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("catalog_version", AUTO_ID, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["catalog_version"],
            ["catalog_versions.version"],
            name="fk_plan_versions_catalog_version_catalog_versions",
        ),
        sa.PrimaryKeyConstraint("plan", "version", name="pk_plan_versions"),
    )
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("plan_version", sa.Integer(), nullable=True))
    op.create_table(
        "plan_migrations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=False),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("at", sa.String(16), nullable=False),
        sa.Column("proration", sa.String(32), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plan_migrations"),
    )
    op.create_table(
        "plan_migration_customers",
        sa.Column("migration_id", sa.String(64), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("subscription_id", ID, nullable=False),
        sa.Column("interval", sa.String(16), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("old_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("new_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("effective_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["plan_migrations.id"],
            name="fk_plan_migration_customers_migration_id_plan_migrations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("migration_id", "customer_id", name="pk_plan_migration_customers"),
    )
    op.create_index(
        "ix_plan_migration_customers_status",
        "plan_migration_customers",
        ["migration_id", "status"],
    )
    op.create_table(
        "customer_overrides",
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("limit_value", sa.BigInteger(), nullable=True),
        sa.Column("unlimited", sa.Boolean(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_customer_overrides_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("customer_id", "feature", name="pk_customer_overrides"),
    )
    op.create_table(
        "usage_grants",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_usage_grants_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage_grants"),
        sa.UniqueConstraint(
            "customer_id", "idempotency_key", name="uq_usage_grants_customer_id_idempotency_key"
        ),
    )
    op.create_index(
        "ix_usage_grants_customer_id_period_end", "usage_grants", ["customer_id", "period_end"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_grants_customer_id_period_end", "usage_grants")
    op.drop_table("usage_grants")
    op.drop_table("customer_overrides")
    op.drop_index("ix_plan_migration_customers_status", "plan_migration_customers")
    op.drop_table("plan_migration_customers")
    op.drop_table("plan_migrations")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("plan_version")
    op.drop_table("plan_versions")
    op.drop_table("catalog_versions")
