"""Decide what Stripe's events do to Tollgate's mirror: which snapshot wins, statuses, retries.

Stripe delivers events at least once, in any order, for up to three days. Each mirrored object
keeps a watermark: the `created` second and id of the event whose snapshot it holds. A newer
event's snapshot replaces the stored one and an older one is dropped. Two events from the same
second (Stripe's `created` has one-second resolution) are settled by the object's progress where
it only moves one way (an invoice never goes from paid back to open). Otherwise Tollgate asks
Stripe for the object as it is now, and the row written from that copy carries the second Stripe
vouches for (`fetched_watermark`), so older events of that object need not ask again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

# -- what Tollgate keeps of Stripe's objects --------------------------------------------------


# The snapshots of the objects every subscription and customer event carries are NamedTuples:
# as immutable as a frozen dataclass, and made by `tuple.__new__` in C where a frozen dataclass
# sets each field through `object.__setattr__` (a subscription event made about 30 of them).
# translate.py makes them with their fields in order, positionally: binding keywords costs more
# than making the tuple.


class CustomerSnapshot(NamedTuple):
    """A Stripe customer; `app_id` is the app's id for it (metadata `tollgate_customer_id`)."""

    stripe_id: str
    app_id: str
    email: str | None
    name: str | None
    currency: str | None
    metadata: Mapping[str, str]
    deleted: bool
    # The billing address (only the fields set) and `tax_exempt`: none | exempt | reverse.
    address: Mapping[str, str] | None = None
    tax_exempt: str | None = None


@dataclass(frozen=True, slots=True)
class TaxIdSnapshot:
    """A customer's tax ID (`customer.tax_id.*`); `verification` is Stripe's status."""

    id: str
    stripe_customer_id: str
    type: str
    value: str
    country: str | None
    verification: str | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class TaxRateSnapshot:
    """A tax rate's terms; `percentage` is exact text ("9.975")."""

    id: str
    display_name: str
    jurisdiction: str | None
    percentage: str
    inclusive: bool

    def terms(self) -> dict[str, Any]:
        """Return what an invoice's tax line shows of the rate."""
        return {
            "display_name": self.display_name,
            "jurisdiction": self.jurisdiction,
            "percentage": self.percentage,
            "inclusive": self.inclusive,
        }


class SubscriptionItemSnapshot(NamedTuple):
    """One price on a subscription; `plan` and `feature` come from the price's metadata."""

    id: str
    price_id: str
    lookup_key: str | None
    usage_type: str | None
    quantity: int | None
    interval: str | None
    plan: str | None
    feature: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    plan_version: int | None = None  # the price's metadata tollgate_plan_version (issue 20)


class SubscriptionSnapshot(NamedTuple):
    """A Stripe subscription; `status` is Stripe's own, not Tollgate's (see tollgate_status)."""

    id: str
    stripe_customer_id: str
    status: str
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_start: datetime | None
    trial_end: datetime | None
    collection_method: str | None
    currency: str | None
    latest_invoice: str | None
    items: tuple[SubscriptionItemSnapshot, ...] = ()
    discount_ids: tuple[str, ...] = ()  # the discounts in force, in Stripe's order (issue 20)
    # How its invoices are paid (issue 21): its own default method, and the methods offered
    # (`payment_settings.payment_method_types`; None: whatever the payer has).
    default_payment_method: str | None = None
    payment_method_types: tuple[str, ...] | None = None
    change_pending: bool = False  # a change waits for its invoice to be paid (`pending_update`)

    @property
    def base_item(self) -> SubscriptionItemSnapshot | None:
        """The item that carries the plan (see plan_item)."""
        items = self.items
        # Most subscriptions have one item, which carries the plan (plan_item's last resort).
        return items[0] if len(items) == 1 else plan_item(items)

    def plan_terms(
        self,
    ) -> tuple[str | None, int | None, str | None, int | None, datetime | None, datetime | None]:
        """Return what the plan item says, at once: (plan, plan_version, interval, seats,
        current_period_start, current_period_end), the properties of those names."""
        item = self.base_item
        if item is None:
            return None, None, None, None, None, None
        plan = item.plan
        return (
            plan,
            None if plan is None else item.plan_version or 1,
            item.interval,
            item.quantity if item.usage_type != "metered" else None,
            item.current_period_start,
            item.current_period_end,
        )

    @property
    def plan(self) -> str | None:
        return self.plan_terms()[0]

    @property
    def plan_version(self) -> int | None:
        return self.plan_terms()[1]

    @property
    def interval(self) -> str | None:
        return self.plan_terms()[2]

    @property
    def seats(self) -> int | None:
        return self.plan_terms()[3]

    @property
    def current_period_start(self) -> datetime | None:
        return self.plan_terms()[4]

    @property
    def current_period_end(self) -> datetime | None:
        return self.plan_terms()[5]


@dataclass(frozen=True, slots=True)
class InvoicePaymentSnapshot:
    """A payment toward an invoice: which PaymentIntent or charge paid it."""

    id: str
    invoice_id: str
    payment_intent: str | None
    charge_id: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class InvoiceSnapshot:
    """A Stripe invoice; amounts are integer minor units of `currency`."""

    id: str
    stripe_customer_id: str
    subscription_id: str | None
    status: str | None
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    total: int
    attempt_count: int
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    billing_reason: str | None
    number: str | None
    period_start: datetime | None
    period_end: datetime | None
    payments: tuple[InvoicePaymentSnapshot, ...] = field(default_factory=tuple)
    subtotal: int | None = None  # before discounts and tax
    tax: int = 0  # all its taxes (Stripe's `total_taxes`), included in `total`
    # What each discount took off: (discount id, amount), Stripe's `total_discount_amounts`.
    discount_amounts: tuple[tuple[str, int], ...] = ()
    # Each tax: (tax rate id, amount), Stripe's `total_taxes`; and the customer's `tax_exempt`.
    tax_amounts: tuple[tuple[str, int], ...] = ()
    customer_tax_exempt: str | None = None
    # `payment_settings.payment_method_types` (empty: Stripe's defaults), issue 21.
    payment_method_types: tuple[str, ...] = ()

    @property
    def discount_ids(self) -> tuple[str, ...]:
        return tuple(discount for discount, _ in self.discount_amounts)

    @property
    def by_bank_transfer(self) -> bool:
        """Whether the invoice is paid by bank transfer only (`customer_balance`)."""
        return self.payment_method_types == (BANK_TRANSFER,)


BANK_TRANSFER = "customer_balance"  # Stripe's payment method type of bank transfers


@dataclass(frozen=True, slots=True)
class BankTransferSnapshot:
    """A PaymentIntent paid by bank transfer: what is still to come, where to send it."""

    id: str
    stripe_customer_id: str
    amount: int
    amount_remaining: int
    currency: str
    status: str
    reference: str | None
    # {bank_name, routing_number, account_number, account_holder_name}, when Stripe gave one.
    account: dict[str, str] | None
    instructions_url: str | None


@dataclass(frozen=True, slots=True)
class DiscountSnapshot:
    """A discount: a coupon (its terms as Stripe holds them) redeemed by a customer."""

    id: str
    stripe_customer_id: str | None
    subscription_id: str | None
    coupon_id: str
    catalog_coupon: str | None  # the catalog's coupon id, when Tollgate made the coupon
    name: str | None
    percent_off: str | None  # "20", "12.5"
    amount_off: int | None
    currency: str | None
    amounts_off: dict[str, int]  # other currencies' amounts (`currency_options`)
    duration: str
    duration_in_months: int | None
    promotion_code: str | None
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class RefundSnapshot:
    """A refund of (part of) a charge."""

    id: str
    charge_id: str | None
    amount: int
    currency: str
    status: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ChargeSnapshot:
    """A charge; `refunds` holds the refunds the payload listed (Stripe may leave them out)."""

    id: str
    stripe_customer_id: str | None
    payment_intent: str | None
    amount: int
    amount_refunded: int
    currency: str
    status: str
    refunded: bool
    disputed: bool
    refunds: tuple[RefundSnapshot, ...] | None = None
    payment_method_type: str | None = None


@dataclass(frozen=True, slots=True)
class DisputeSnapshot:
    """A dispute (chargeback) of a charge."""

    id: str
    charge_id: str
    payment_intent: str | None
    amount: int
    currency: str
    status: str
    reason: str | None
    evidence_due_by: datetime | None = None


# A dispute the merchant must still answer (a chargeback, or an inquiry).
DISPUTE_OPEN_STATUSES = frozenset({"needs_response", "warning_needs_response"})


@dataclass(frozen=True, slots=True)
class CheckoutSessionSnapshot:
    """A completed Checkout Session: who paid, and the subscription it started (if any)."""

    id: str
    mode: str | None
    stripe_customer_id: str | None
    subscription_id: str | None
    client_reference_id: str | None


def plan_item(items: Sequence[SubscriptionItemSnapshot]) -> SubscriptionItemSnapshot | None:
    """Return the item that carries the plan: a plan price that is not a metered feature."""
    for item in items:
        if item.plan and not item.feature:
            return item
    for item in items:
        if item.plan:
            return item
    for item in items:
        if item.usage_type != "metered":
            return item
    return items[0] if items else None


# -- statuses ------------------------------------------------------------------------------

ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})


def tollgate_status(
    stripe_status: str | None, *, cancel_at_period_end: bool, cancel_at: datetime | None
) -> str:
    """Return Tollgate's status: Stripe's, `canceling` while a cancel is pending, or `none`."""
    if stripe_status is None:
        return "none"
    if stripe_status in ("active", "trialing") and (cancel_at_period_end or cancel_at is not None):
        return "canceling"
    return stripe_status


# -- which snapshot wins ---------------------------------------------------------------------


class Decision(StrEnum):
    """What an event's snapshot does to the stored object."""

    APPLY = "apply"
    SKIP = "skip"
    REFETCH = "refetch"


def decide(
    *,
    stored_created: int | None,
    stored_event_id: str | None,
    incoming_created: int,
    incoming_event_id: str | None = None,
    differs: bool = True,
    progress: int = 0,
) -> Decision:
    """Decide by the watermark whether an event's snapshot replaces the stored object.

    `differs` says whether the snapshot differs from what is stored; `progress` compares them
    where the object only moves one way (see `compare_progress`): above 0 when the incoming
    snapshot is further along, below 0 when it is behind, 0 when that cannot tell.
    """
    if stored_created is None:
        return Decision.APPLY
    if incoming_event_id is not None and incoming_event_id == stored_event_id:
        return Decision.SKIP
    if incoming_created > stored_created:
        return Decision.APPLY
    if incoming_created < stored_created or not differs:
        return Decision.SKIP
    # Same second and different content: the order within the second is unknown.
    if progress > 0:
        return Decision.APPLY
    if progress < 0:
        return Decision.SKIP
    return Decision.REFETCH


def fetched_watermark(
    event_created: int, stripe_time: int | None, current: Mapping[str, Any]
) -> int:
    """Return the `created` second a row written from Stripe's current copy of an object carries.

    The copy was read for an event of second `event_created`; Stripe answered at `stripe_time`
    (its `Date` header, in whole seconds, on the clock its events' `created` are stamped with).
    Stripe reads the object less than a second before it answers, so every change whose event
    was created before second `stripe_time - 1` is in the copy: the row carries that second
    when it is later than the event's own, and an older event of the same object delivered
    afterwards (a backlog, a retry, a replay) is skipped by its watermark instead of asking
    Stripe again. An event of second `stripe_time - 1` or later is decided as before (applied
    when newer, asked about again when of the same second). Test-mode objects count only when
    they say they are on no test clock: a test clock's objects get events stamped with the
    clock's own time, which may be behind Stripe's.
    """
    if stripe_time is None:
        return event_created
    if (
        current.get("livemode") is not True
        and current.get("test_clock", _ON_TEST_CLOCK) is not None
    ):
        return event_created
    return max(event_created, stripe_time - 1)


_ON_TEST_CLOCK = object()  # what `fetched_watermark` assumes of a copy that does not say


def compare_progress(incoming: tuple[Any, ...], stored: tuple[Any, ...]) -> int:
    """Return 1 when `incoming` is further along than `stored`, -1 when behind, else 0."""
    if incoming > stored:
        return 1
    if incoming < stored:
        return -1
    return 0


_INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
_CHARGE_STATUS_RANK = {"pending": 0, "succeeded": 1, "failed": 1}
_DISPUTE_STATUS_RANK = {
    "warning_needs_response": 0,
    "needs_response": 0,
    "warning_under_review": 1,
    "under_review": 1,
    "warning_closed": 2,
    "won": 2,
    "lost": 2,
    "prevented": 2,
}


def subscription_progress(status: str, current_period_start: datetime | None) -> tuple[Any, ...]:
    """Return how far a subscription has come; only an end or a renewal is one-way."""
    started = current_period_start.timestamp() if current_period_start else 0.0
    return (status in ENDED_STATUSES, started)


def invoice_progress(status: str | None, attempt_count: int, amount_paid: int) -> tuple[int, ...]:
    """Return how far an invoice has come: draft, open, uncollectible, paid or void."""
    return (_INVOICE_STATUS_RANK.get(status or "", 0), attempt_count, amount_paid)


def bank_transfer_progress(status: str, amount: int, amount_remaining: int) -> tuple[int, ...]:
    """Return how far a bank-transfer payment has come: money received, then settled."""
    return (int(status in ("succeeded", "canceled")), amount - amount_remaining)


def charge_progress(
    status: str, amount_refunded: int, refunded: bool, disputed: bool
) -> tuple[int, ...]:
    """Return how far a charge has come: settled, then refunded or disputed."""
    return (_CHARGE_STATUS_RANK.get(status, 0), amount_refunded, int(refunded), int(disputed))


def dispute_progress(status: str) -> tuple[int, ...]:
    """Return how far a dispute has come: needs response, under review, closed."""
    return (_DISPUTE_STATUS_RANK.get(status, 0),)


_TAX_ID_VERIFICATION_RANK = {"pending": 0, "verified": 1, "unverified": 1, "unavailable": 1}


def tax_id_progress(deleted: bool, verification: str | None) -> tuple[int, ...]:
    """Return how far a tax ID has come: verification settles once, deletion is final."""
    return (int(deleted), _TAX_ID_VERIFICATION_RANK.get(verification or "", 0))


def customer_progress(deleted: bool) -> tuple[int, ...]:
    """Return how far a customer has come: a deleted customer stays deleted."""
    return (int(deleted),)


_REFUND_STATUS_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 1}


def refund_is_behind(incoming_status: str | None, stored_status: str | None) -> bool:
    """Return whether a refund snapshot is older than the stored one (refunds only settle)."""
    rank = _REFUND_STATUS_RANK
    return rank.get(incoming_status or "", 1) < rank.get(stored_status or "", 0)


# -- failures ------------------------------------------------------------------------------

RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """Return the wait before retrying an event that has failed `attempts` times."""
    exponent = max(attempts - 1, 0)
    if exponent >= 20:
        return RETRY_CAP
    return min(RETRY_BASE * 2**exponent, RETRY_CAP)


# -- the audit trail -------------------------------------------------------------------------


def changed_fields(
    before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the fields that differ, as (their values before, their values after)."""
    if before is None:
        return {}, dict(after)
    keys = [key for key in after if before.get(key) != after[key]]
    return {key: before.get(key) for key in keys}, {key: after[key] for key in keys}
