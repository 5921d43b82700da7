"""The Stripe webhook inbox and the mirror its handlers keep of Stripe's objects."""

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
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollgate.db.models.base import AUTO_ID, STRIPE_ID, Base
from tollgate.db.types import UTCDateTime

# The inbox rows still to do: nearly every row is done (succeeded, ignored) from its insert on,
# and no query looks for those by status, so the status index holds only these (migration
# 0024) and an applied event's insert does not write it. Equalities joined by OR: SQLite uses a
# partial index only for a query whose WHERE implies its condition, which it can prove from
# `status = ?` (or an OR of such) but not from `status IN (…)`.
UNFINISHED_EVENT = "status = 'pending' OR status = 'processing' OR status = 'failed'"


class StripeEvent(Base):
    """A Stripe event as delivered (raw body kept), and how far its processing got."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index(
            "ix_stripe_events_unfinished",
            "status",
            "next_attempt_at",
            sqlite_where=text(UNFINISHED_EVENT),
            postgresql_where=text(UNFINISHED_EVENT),
        ),
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
    # Stripe's `tax_exempt` (none | exempt | reverse), mirrored from customer events (issue 21).
    tax_exempt: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Bank transfers (issue 21): the customer's cash balance at Stripe as last fetched, minor
    # units by currency ({"usd": 1500}); None until a transfer was seen.
    cash_balance: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)


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
    # The methods its invoices are offered (`payment_settings.payment_method_types`; None:
    # whatever the payer has), set from the plan's card limit and the usage so far (0026).
    payment_method_types: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


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
    # Each tax apart (`total_taxes` with its rate's terms): [{tax_rate, display_name,
    # jurisdiction, percentage, inclusive, amount}]; and the customer's `tax_exempt` it was
    # made for (`reverse`: the buyer accounts for the tax).
    tax_amounts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    customer_tax_exempt: Mapped[str | None] = mapped_column(String(16), nullable=True)


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


class BankTransfer(Base):
    """A payment waiting for (or paid by) bank transfers: a `customer_balance` PaymentIntent,
    with where to send the money and how much is still to come (issue 21)."""

    __tablename__ = "bank_transfers"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)  # the PaymentIntent
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    amount_remaining: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The account to pay: {bank_name, routing_number, account_number, account_holder_name}.
    account: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Stripe's hosted instructions page.
    instructions_url: Mapped[str | None] = mapped_column(Text, nullable=True)
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


class TaxRate(Base):
    """A Stripe tax rate's terms, as fetched once for the invoices that name it."""

    __tablename__ = "tax_rates"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255))
    jurisdiction: Mapped[str | None] = mapped_column(String(255), nullable=True)
    percentage: Mapped[str] = mapped_column(String(16))  # exact text: "9.975"
    inclusive: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CustomerTaxId(Base):
    """A customer's tax ID (VAT, GST, ABN…) as Stripe's `customer.tax_id.*` events say it."""

    __tablename__ = "customer_tax_ids"

    id: Mapped[str] = mapped_column(String(STRIPE_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    verification: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    watermark_created: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    watermark_event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditLog(Base):
    """One applied change: who or what made it, when, the fields before and after, the event."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id"),
        Index("uq_audit_log_request_key", "request_key", unique=True),
    )

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    # The key of the request that made the change through Tollgate (its Stripe write's key):
    # one row however often the request is repeated. None for a Stripe event's change.
    request_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
