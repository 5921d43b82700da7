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
from tollgate.logs import current_request_id

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
        # (object_id, created): an object's events newest first (a customer's timeline).
        Index("ix_stripe_events_object_id_created", "object_id", "created"),
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
    # Dunning's hold on access while past due: None follows the subscription, else
    # full | reduced | default (set by the dunning policy, cleared when a payment recovers).
    dunning_access: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # While a bank debit of the customer is processing (issue 21): the access it gives, full
    # (TOLLGATE_PROCESSING_ACCESS=keep) or default (wait); None when no debit is processing.
    processing_access: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # While a dispute of theirs is open or lost (issue 21, TOLLGATE_DISPUTE_ACCESS=reduce):
    # `reduced`; None otherwise.
    dispute_access: Mapped[str | None] = mapped_column(String(16), nullable=True)


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
    # The plan's version its price belongs to (issue 20; None: a price from before versions, 1).
    plan_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interval: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latest_invoice: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The ids of the discounts in force (issue 20; their coupons are in `discounts`).
    discount_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


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
    __table_args__ = (Index("ix_invoices_customer_created", "customer_id", "created_at", "id"),)

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
    # Before discounts, and what each discount took off (issue 20): `total_discount_amounts`.
    subtotal: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    discount_amounts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)

    # The invoice's taxes in all (Stripe's `total_taxes`), shown apart; None before issue 21.
    tax: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


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
    # `payment_method_details.type` (card, us_bank_account, …): what the charge cost in fees.
    payment_method_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
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
    __table_args__ = (Index("ix_disputes_status_evidence_due_by", "status", "evidence_due_by"),)

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
    # Stripe's `evidence_details.due_by`: the operator is reminded 2 days before (issue 21).
    evidence_due_by: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The charge's customer (no foreign key: the dispute may be seen before the customer).
    customer_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)


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


class UsageEvent(Base):
    """A usage event as accepted: its id is the app's, so a repeat is recognised as long as the
    event is kept (TOLLGATE_USAGE_RAW_RETENTION_DAYS).

    Readers of usage over time read `usage_hourly`; raw events serve dedupe, voids and audit,
    and are pruned past the retention (the index on `occurred_at` finds them). On PostgreSQL
    the table is partitioned by month and ids are unique through `usage_event_ids` (see
    `tollgate.db.queries.usage_storage`; migration 0020).
    """

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_occurred_at", "occurred_at"),)

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageCounter(Base):
    """A customer's aggregate of one meter in one billing period [period_start, period_end)."""

    __tablename__ = "usage_counters"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    # The latest event so far, for `last` aggregation (ordered by the events' own time).
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    # Overage units already written to the meter outbox for this period.
    reported: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Units reserved and not yet committed or released (usage_reservations); they count against
    # the hard limit like used units (migration 0011).
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The current fixed window of a plan's `rate` limit (per minute, hour or day): its start
    # and what was counted in it.
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageThreshold(Base):
    """A warning level (percent of the included quantity) that usage crossed, once a period."""

    __tablename__ = "usage_thresholds"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    percent: Mapped[int] = mapped_column(Integer, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger)
    crossed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MeterOutbox(Base):
    """Overage to report to a Stripe billing meter, written with the usage that caused it.

    The sync job groups pending rows and stamps the group with an `identifier` before calling
    Stripe, so a resend after a crash or timeout carries the same identifier and counts once.
    """

    __tablename__ = "meter_outbox"
    __table_args__ = (
        Index("ix_meter_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_meter_outbox_identifier", "identifier"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    feature: Mapped[str] = mapped_column(String(64))
    event_name: Mapped[str] = mapped_column(String(100))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # pending | claimed (identifier stamped, being sent) | sent | failed (Stripe refused it)
    status: Mapped[str] = mapped_column(String(16))
    identifier: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsagePending(Base):
    """Usage counted in Redis and committed with its events, not yet folded into usage_counters.

    One row per counter per batch (the batch's sum, max or latest reading). The flush job folds
    rows into their counters and deletes them in one transaction (migration 0008).
    """

    __tablename__ = "usage_pending"
    __table_args__ = (
        Index("ix_usage_pending_customer_id_period_start", "customer_id", "period_start"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    aggregation: Mapped[str] = mapped_column(String(8))  # sum | max | last
    value: Mapped[int] = mapped_column(BigInteger)
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # change in held


# -- notifications, app webhooks, job locks, dunning (migration 0005) -------------------------


class Notification(Base):
    """An email to send, once per (customer, template, cause): the outbox the worker delivers."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("customer_id", "template", "cause"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # No foreign key: a notification outlives nothing, but must never block the change causing it.
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    template: Mapped[str] = mapped_column(String(64))
    cause: Mapped[str] = mapped_column(String(STRIPE_ID))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending | sent | skipped (no address) | failed (gave up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The request that queued it (X-Request-Id), so the worker's lines about it carry it too.
    request_id: Mapped[str | None] = mapped_column(
        String(128), nullable=True, default=current_request_id
    )


class AppEvent(Base):
    """A webhook to the app, keyed by its event id (derived from its cause, so repeats are one)."""

    __tablename__ = "app_events"
    __table_args__ = (Index("ix_app_events_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    cause: Mapped[str] = mapped_column(String(STRIPE_ID))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending | delivered | failed (gave up)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    request_id: Mapped[str | None] = mapped_column(
        String(128), nullable=True, default=current_request_id
    )


class JobLock(Base):
    """Who runs a job until when, on SQLite (PostgreSQL uses an advisory lock instead)."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime())


# -- reconciliation (migration 0006) -----------------------------------------------------------


class ReconciliationRun(Base):
    """One comparison of the mirror with Stripe over a window, and what it found."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # cli | nightly
    trigger: Mapped[str] = mapped_column(String(16))
    # The nightly slot this run took; unique, so replicas racing for one night run it once.
    scheduled_for: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), nullable=True, unique=True
    )
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # running | succeeded | failed
    status: Mapped[str] = mapped_column(String(16))
    checked: Mapped[int] = mapped_column(Integer, default=0)
    # Drifts by kind: {"missing_locally": 3, …}
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    healed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReconciliationDrift(Base):
    """One object the mirror and Stripe disagree on, with both sides' differing values."""

    __tablename__ = "reconciliation_drifts"
    __table_args__ = (Index("ix_reconciliation_drifts_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        AUTO_ID, ForeignKey("reconciliation_runs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    local: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stripe: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    healed: Mapped[bool] = mapped_column(Boolean, default=False)


# -- credits ledger (migration 0007) -----------------------------------------------------------


class CreditAccount(Base):
    """One account of a customer's credits ledger, with its balance (the sum of its entries).

    Every customer has its wallet (`customer`) and its own system accounts (`grants`,
    `purchases`, `usage`, `expired`, `overdraft`), so a burn locks only its customer's rows.
    """

    __tablename__ = "credit_accounts"
    __table_args__ = (UniqueConstraint("customer_id", "account"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    account: Mapped[str] = mapped_column(String(16))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # How far below zero the wallet may go (kept on the wallet row only; 0 on the others).
    allowance: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditTransaction(Base):
    """One balanced change to a customer's credits: why, who, and its key (once per customer)."""

    __tablename__ = "credit_transactions"
    __table_args__ = (UniqueConstraint("customer_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    # grant | purchase | burn | expiry | clawback | overdraft_invoice
    kind: Mapped[str] = mapped_column(String(32))
    # The credits asked for (a grant's size, a burn's units times price): a repeat must match.
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # "api:<key name>", "system" or "stripe:<event id>"
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditEntry(Base):
    """One side of a credits transaction: a signed amount into one account (of one lot)."""

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_customer_id_account", "customer_id", "account"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("credit_transactions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    account: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditLot(Base):
    """Credits that came in together (a grant or a purchase), what is left, when they expire."""

    __tablename__ = "credit_lots"
    __table_args__ = (Index("ix_credit_lots_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("credit_transactions.id"))
    source: Mapped[str] = mapped_column(String(16))
    credits: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A purchase's PaymentIntent, so a refund of its charge finds the credits to take back.
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- the operator console (migration 0010) -----------------------------------------------------


class Operator(Base):
    """A person who signs in to the console; only an argon2 hash of the password is kept."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # admin | support | readonly
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OperatorSession(Base):
    """A signed-in browser: the SHA-256 of its cookie, its CSRF secret, its idle and hard ends."""

    __tablename__ = "operator_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SignInAttempt(Base):
    """One sign-in try, kept a day, so tries are limited per account and per address."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (
        Index("ix_sign_in_attempts_account_at", "account", "at"),
        Index("ix_sign_in_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


# The console's reads: a customer's timeline, the lists behind the overview (migration 0010).
Index("ix_audit_log_object_id_at", AuditLog.object_id, AuditLog.at)
Index("ix_app_events_customer_id_created_at", AppEvent.customer_id, AppEvent.created_at)
Index("ix_notifications_customer_id_created_at", Notification.customer_id, Notification.created_at)
Index("ix_customers_created_at_id", Customer.created_at, Customer.id)
Index("ix_customers_email", Customer.email)
Index("ix_subscriptions_status_plan", Subscription.status, Subscription.plan)
Index("ix_charges_created_at", Charge.created_at)
Index("ix_stripe_events_type_created", StripeEvent.type, StripeEvent.created)
# The overview's trials ending, churn this month and failed charges (migration 0017).
Index("ix_subscriptions_status_trial_end", Subscription.status, Subscription.trial_end)
Index(
    "ix_subscriptions_status_ended",
    Subscription.status,
    Subscription.ended_at,
    Subscription.canceled_at,
)
Index("ix_charges_status_created_at", Charge.status, Charge.created_at)
# -- usage controls (migration 0011) -----------------------------------------------------------


class UsageConsumption(Base):
    """The answer of one `consume` call, kept so a retry with its id gets the same answer."""

    __tablename__ = "usage_consumptions"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    feature: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    allowed: Mapped[bool] = mapped_column(Boolean)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageReservation(Base):
    """Units held against a customer's limit for long work, until committed, released or expired."""

    __tablename__ = "usage_reservations"
    __table_args__ = (Index("ix_usage_reservations_status_expires_at", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    feature: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    quantity: Mapped[int] = mapped_column(BigInteger)  # units held
    status: Mapped[str] = mapped_column(String(16))  # held | committed | released | expired
    committed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsageVoid(Base):
    """A usage event taken back (`POST /v1/usage/void`): who, why, when; the audit of it."""

    __tablename__ = "usage_voids"

    event_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    meter: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    voided_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MeterAdjustment(Base):
    """A meter event to cancel in Stripe (a meter event adjustment), once: usage voided after
    its overage was reported. The units the cancelled event held beyond the correction are sent
    again as a new meter event (meter_outbox)."""

    __tablename__ = "meter_adjustments"

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    stripe_account: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    event_name: Mapped[str] = mapped_column(String(100))
    cancel_identifier: Mapped[str] = mapped_column(String(100), unique=True)
    units: Mapped[int] = mapped_column(BigInteger)  # what the cancelled event counted
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SpendCap(Base):
    """The most a customer's overage may cost in a billing period; past it, soft limits are hard."""

    __tablename__ = "spend_caps"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    set_by: Mapped[str] = mapped_column(String(255))  # operator (api:<key>) or customer
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageAlert(Base):
    """A threshold on one feature of one customer: units, percent of included, or money."""

    __tablename__ = "usage_alerts"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), index=True)
    feature: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # units | percent | money (minor units)
    threshold: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageAlertFiring(Base):
    """An alert that fired in a period: once each (its webhook and email queued with it)."""

    __tablename__ = "usage_alert_firings"

    alert_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AutoTopup(Base):
    """Buy `pack` with the saved card when the customer's credits fall below `below`."""

    __tablename__ = "auto_topups"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    below: Mapped[int] = mapped_column(BigInteger)
    pack: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TopupAttempt(Base):
    """One automatic purchase of a credit pack: queued at the crossing, paid off-session once."""

    __tablename__ = "topup_attempts"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    pack: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | succeeded | failed
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


# -- pricing that changes (issue 20, migration 0014) -------------------------------------------


class CatalogVersion(Base):
    """A catalog as `catalog sync` made it in Stripe: every server process loads the newest."""

    __tablename__ = "catalog_versions"

    version: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    # The document as read (canonical JSON of the YAML) and its SHA-256.
    body: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Each plan's version in this catalog: {"pro": 2, "free": 1}.
    plan_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanVersionRow(Base):
    """A version of a plan: the digest of its terms and the catalog version that brought it."""

    __tablename__ = "plan_versions"

    plan: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    catalog_version: Mapped[int] = mapped_column(ForeignKey("catalog_versions.version"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanMigration(Base):
    """Moving a plan's subscribers from one version to another (`tollgate plans migrate`)."""

    __tablename__ = "plan_migrations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    plan: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    # now | renewal
    at: Mapped[str] = mapped_column(String(16))
    proration: Mapped[str] = mapped_column(String(32))
    notify: Mapped[bool] = mapped_column(Boolean, default=False)
    # running | done | failed
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanMigrationCustomer(Base):
    """One subscriber of a migration: its progress, so a resumed run changes nobody twice."""

    __tablename__ = "plan_migration_customers"
    __table_args__ = (Index("ix_plan_migration_customers_status", "migration_id", "status"),)

    migration_id: Mapped[str] = mapped_column(
        ForeignKey("plan_migrations.id", ondelete="CASCADE"), primary_key=True
    )
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    interval: Mapped[str | None] = mapped_column(String(16), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    old_amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    new_amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # pending | done | failed | skipped
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerOverride(Base):
    """One customer's own grant of one feature (a deal), optionally until `ends_at`."""

    __tablename__ = "customer_overrides"

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    limit: Mapped[int | None] = mapped_column("limit_value", BigInteger, nullable=True)
    unlimited: Mapped[bool] = mapped_column(Boolean, default=False)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageGrant(Base):
    """Included usage given once, for the period it was given in (support's extra runs)."""

    __tablename__ = "usage_grants"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key"),
        Index("ix_usage_grants_customer_id_period_end", "customer_id", "period_end"),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    feature: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- usage growing for years (issue 23, migration 0020) --------------------------------------


class UsageHourly(Base):
    """A customer's usage of one meter in one hour, rolled up as its events are recorded: what
    usage history, the billing page's chart and the console read, so raw events can be pruned.

    `quantity` is the sum of the events' values (voids count down), `events` how many were
    recorded, `peak` the greatest value (for `max` and `last` meters).
    """

    __tablename__ = "usage_hourly"

    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    peak: Mapped[int] = mapped_column(BigInteger)


class Discount(Base):
    """A Stripe discount (a coupon redeemed by a customer) with its coupon's terms, as fetched."""

    __tablename__ = "discounts"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    coupon_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    # The catalog's coupon when Tollgate made it (metadata `tollgate_coupon`).
    catalog_coupon: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    percent_off: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "20", "12.5"
    amount_off: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    # Other currencies' amounts off (`currency_options`): {"eur": 900}.
    amounts_off: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    duration: Mapped[str] = mapped_column(String(16))
    duration_in_months: Mapped[int | None] = mapped_column(Integer, nullable=True)
    promotion_code: Mapped[str | None] = mapped_column(String(255), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
