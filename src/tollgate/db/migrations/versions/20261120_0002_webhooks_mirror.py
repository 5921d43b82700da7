"""Stripe webhooks: the event inbox, the mirror of Stripe's objects, the audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _watermark() -> list[sa.Column]:
    return [
        sa.Column("watermark_created", sa.BigInteger(), nullable=True),
        sa.Column("watermark_event_id", ID, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", ID, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=True),
        sa.Column("object_id", ID, nullable=True),
        sa.Column("stripe_account", ID, nullable=True),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stripe_events"),
    )
    op.create_index(
        "ix_stripe_events_status_next_attempt_at", "stripe_events", ["status", "next_attempt_at"]
    )
    op.create_index("ix_stripe_events_created", "stripe_events", ["created"])
    op.create_index("ix_stripe_events_object_id", "stripe_events", ["object_id"])

    op.create_table(
        "customers",
        sa.Column("id", ID, nullable=False),
        sa.Column("stripe_customer_id", ID, nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("stripe_account", ID, nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        *_watermark(),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("stripe_customer_id", name="uq_customers_stripe_customer_id"),
    )

    op.create_table(
        "subscriptions",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("cancel_at", UTCDateTime(), nullable=True),
        sa.Column("canceled_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("trial_start", UTCDateTime(), nullable=True),
        sa.Column("trial_end", UTCDateTime(), nullable=True),
        sa.Column("current_period_start", UTCDateTime(), nullable=True),
        sa.Column("current_period_end", UTCDateTime(), nullable=True),
        sa.Column("collection_method", sa.String(32), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("plan", sa.String(64), nullable=True),
        sa.Column("interval", sa.String(16), nullable=True),
        sa.Column("seats", sa.Integer(), nullable=True),
        sa.Column("latest_invoice", ID, nullable=True),
        *_watermark(),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_subscriptions_customer_id_customers"
        ),
    )
    op.create_index("ix_subscriptions_customer_id", "subscriptions", ["customer_id"])

    op.create_table(
        "subscription_items",
        sa.Column("id", ID, nullable=False),
        sa.Column("subscription_id", ID, nullable=False),
        sa.Column("price_id", ID, nullable=False),
        sa.Column("lookup_key", sa.String(255), nullable=True),
        sa.Column("usage_type", sa.String(16), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("current_period_start", UTCDateTime(), nullable=True),
        sa.Column("current_period_end", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscription_items"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_items_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_subscription_items_subscription_id", "subscription_items", ["subscription_id"]
    )

    op.create_table(
        "invoices",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("subscription_id", ID, nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_payment_attempt", UTCDateTime(), nullable=True),
        sa.Column("hosted_invoice_url", sa.Text(), nullable=True),
        sa.Column("invoice_pdf", sa.Text(), nullable=True),
        sa.Column("billing_reason", sa.String(64), nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("period_start", UTCDateTime(), nullable=True),
        sa.Column("period_end", UTCDateTime(), nullable=True),
        *_watermark(),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_invoices"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_invoices_customer_id_customers"
        ),
    )
    op.create_index("ix_invoices_customer_id", "invoices", ["customer_id"])
    op.create_index("ix_invoices_subscription_id", "invoices", ["subscription_id"])

    op.create_table(
        "invoice_payments",
        sa.Column("id", ID, nullable=False),
        sa.Column("invoice_id", ID, nullable=False),
        sa.Column("payment_intent", ID, nullable=True),
        sa.Column("charge_id", ID, nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invoice_payments"),
    )
    op.create_index("ix_invoice_payments_invoice_id", "invoice_payments", ["invoice_id"])
    op.create_index("ix_invoice_payments_payment_intent", "invoice_payments", ["payment_intent"])
    op.create_index("ix_invoice_payments_charge_id", "invoice_payments", ["charge_id"])

    op.create_table(
        "charges",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=True),
        sa.Column("payment_intent", ID, nullable=True),
        sa.Column("invoice_id", ID, nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("refunded", sa.Boolean(), nullable=False),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        *_watermark(),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_charges"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_charges_customer_id_customers"
        ),
    )
    op.create_index("ix_charges_customer_id", "charges", ["customer_id"])
    op.create_index("ix_charges_payment_intent", "charges", ["payment_intent"])
    op.create_index("ix_charges_invoice_id", "charges", ["invoice_id"])

    op.create_table(
        "refunds",
        sa.Column("id", ID, nullable=False),
        sa.Column("charge_id", ID, nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_refunds"),
    )
    op.create_index("ix_refunds_charge_id", "refunds", ["charge_id"])

    op.create_table(
        "disputes",
        sa.Column("id", ID, nullable=False),
        sa.Column("charge_id", ID, nullable=False),
        sa.Column("payment_intent", ID, nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        *_watermark(),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_disputes"),
    )
    op.create_index("ix_disputes_charge_id", "disputes", ["charge_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", ID, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("event_id", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_object", "audit_log", ["object_type", "object_id"])
    op.create_index("ix_audit_log_event_id", "audit_log", ["event_id"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "disputes",
        "refunds",
        "charges",
        "invoice_payments",
        "invoices",
        "subscription_items",
        "subscriptions",
        "customers",
        "stripe_events",
    ):
        op.drop_table(table)
