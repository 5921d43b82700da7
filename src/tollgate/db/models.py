"""Tables. Every capability adds its own models here and a migration under migrations/versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tollgate.db.types import UTCDateTime

# Stable constraint names, so migrations name what they drop on both databases.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiKey(Base):
    """An API key; only the SHA-256 of its secret is kept, never the secret itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(10))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# -- Stripe webhooks: the inbox, and the mirror its handlers keep ----------------------------

STRIPE_ID = 255
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
AUTO_ID = BigInteger().with_variant(Integer(), "sqlite")


class StripeEvent(Base):
    """A Stripe event as delivered (raw body kept), and how far its processing got."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_stripe_events_created", "created"),
        Index("ix_stripe_events_object_id", "object_id"),
    )

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    api_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | processing | succeeded | failed | ignored
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    payload: Mapped[str] = mapped_column(Text)


class Customer(Base):
    """A billing customer: the app's organisation, and its Stripe customer unless offline."""

    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(
        String(STRIPE_ID), unique=True, nullable=True
    )
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped in the same transaction as any change to what the customer may do, so a cached
    # entitlement decision that remembers the version it was made at knows it is stale.
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Kept by Tollgate, never by webhooks: the plan a customer has without a Stripe subscription
    # (an offline customer's plan; None means the catalog's default plan), the currency the app
    # asked for before a subscription fixes one, the billing address, and the SHA-256 of the
    # creating request, so a repeat is recognised (same: answered again; different: 409).
    plan: Mapped[str | None] = mapped_column(String(64), nullable=True)
    requested_currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    address: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    creation_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Subscription(Base):
    """A Stripe subscription as last seen; `status` is Stripe's own."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    trial_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    collection_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    plan: Mapped[str | None] = mapped_column(String(64), nullable=True)
    interval: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latest_invoice: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SubscriptionItem(Base):
    """One price on a subscription, with its quantity and period."""

    __tablename__ = "subscription_items"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    price_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    lookup_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    usage_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    quantity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Invoice(Base):
    """A Stripe invoice as last seen; amounts are integer minor units of `currency`."""

    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    # No foreign key: an invoice's events may arrive before its subscription's.
    subscription_id: Mapped[str | None] = mapped_column(
        String(STRIPE_ID), nullable=True, index=True
    )
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount_paid: Mapped[int] = mapped_column(BigInteger)
    amount_remaining: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_payment_attempt: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    invoice_pdf: Mapped[str | None] = mapped_column(Text, nullable=True)
    billing_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InvoicePayment(Base):
    """A payment toward an invoice: the link from a PaymentIntent or charge to its invoice."""

    __tablename__ = "invoice_payments"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(STRIPE_ID), index=True)
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    charge_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Charge(Base):
    """A charge, recorded against its customer and (when known) its invoice."""

    __tablename__ = "charges"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id"), nullable=True, index=True
    )
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    refunded: Mapped[bool] = mapped_column(Boolean, default=False)
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Refund(Base):
    """A refund of (part of) a charge."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    charge_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Dispute(Base):
    """A dispute (chargeback) of a charge."""

    __tablename__ = "disputes"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    charge_id: Mapped[str] = mapped_column(String(STRIPE_ID), index=True)
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditLog(Base):
    """One applied change: who or what made it, when, the fields before and after, the event."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)


# -- customers and subscriptions: what Tollgate itself keeps ----------------------------------


class CreditGrant(Base):
    """Credits granted to a customer (onboarding, …), recorded for the credits capability."""

    __tablename__ = "credit_grants"
    __table_args__ = (UniqueConstraint("customer_id", "reason"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanChange(Base):
    """A plan, interval or seat change Tollgate applies to a subscription when its period ends.

    Stripe has no pending change without a subscription schedule, so Tollgate keeps the change
    and `apply_due_plan_changes` makes it in Stripe shortly before the renewal it takes effect at.
    """

    __tablename__ = "plan_changes"
    __table_args__ = (Index("ix_plan_changes_status_effective_at", "status", "effective_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    subscription_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    plan: Mapped[str] = mapped_column(String(64))
    interval: Mapped[str] = mapped_column(String(16))
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | applied | canceled
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- usage metering and entitlements (migration 0004) ------------------------------------------


class CustomerChange(Base):
    """A change to what a customer may do, in commit order: the feed that invalidates caches.

    Written in the same transaction as the change (with the customer's `state_version` bump);
    servers and clients poll or stream it to drop cached entitlement decisions.
    """

    __tablename__ = "customer_changes"

    seq: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    # subscription | plan | usage | threshold | credits | dunning | customer
    reason: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- notifications, app webhooks, job locks, dunning (migration 0005) -------------------------


# -- reconciliation (migration 0006) -----------------------------------------------------------


# -- credits ledger (migration 0007) -----------------------------------------------------------
