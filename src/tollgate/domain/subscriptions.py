"""Rules for customers' plans and subscriptions: terms, seats, upgrades, statuses. Pure.

Nothing here talks to Stripe or the database, and time is passed in. The services ask these
functions what a request means (which price, how many seats, now or at period end) before they
change anything, so bad input is refused before Tollgate or Stripe changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from tollgate.domain.catalog import (
    MAX_DAYS_UNTIL_DUE,
    MAX_TRIAL_DAYS,
    Catalog,
    CollectionMethod,
    FeatureType,
    Interval,
    Plan,
    PlanPrice,
)
from tollgate.domain.catalog_sync import base_price_lookup_key, overage_price_lookup_key
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.events import BANK_TRANSFER, ENDED_STATUSES, tollgate_status

PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")
SEAT_CHANGE_BEHAVIORS = ("exact", "incremental")
# Tollgate's trial-end settings, as Stripe's trial_settings.end_behavior.missing_payment_method.
TRIAL_END_BEHAVIORS = {"release": "create_invoice", "cancel": "cancel"}
METADATA_KEY_LIMIT = 40
METADATA_VALUE_LIMIT = 500
METADATA_KEYS_MAX = 50
# Stripe's own key: Tollgate stamps it, so the app may not set it.
RESERVED_METADATA_KEYS = frozenset({"tollgate_customer_id"})


# -- plans and statuses ----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerPlan:
    """The plan a customer has now and Tollgate's status for it."""

    plan: str | None
    status: str


def customer_plan(
    *,
    subscription_plan: str | None,
    subscription_status: str | None,
    cancel_at_period_end: bool,
    cancel_at: datetime | None,
    assigned_plan: str | None,
    offline: bool,
    default_plan: str | None,
) -> CustomerPlan:
    """Return the customer's plan and status.

    A live Stripe subscription decides both. Without one, an offline customer is `active` on the
    plan Tollgate keeps for it, and anyone else is on that plan or the catalog's default plan
    with status `none` (no subscription).
    """
    if subscription_status is not None and subscription_status not in ENDED_STATUSES:
        status = tollgate_status(
            subscription_status, cancel_at_period_end=cancel_at_period_end, cancel_at=cancel_at
        )
        return CustomerPlan(subscription_plan or assigned_plan or default_plan, status)
    plan = assigned_plan or default_plan
    if offline and assigned_plan is not None:
        return CustomerPlan(plan, "active")
    return CustomerPlan(plan, "none")


class AssignedPlan(Protocol):
    """What `plan_of` reads of a customer: the plan Tollgate keeps for it, and if it is offline."""

    @property
    def plan(self) -> str | None: ...
    @property
    def offline(self) -> bool: ...


class MirroredSubscription(Protocol):
    """What `plan_of` reads of the customer's subscription as mirrored from Stripe."""

    @property
    def plan(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def cancel_at_period_end(self) -> bool: ...
    @property
    def cancel_at(self) -> datetime | None: ...


def plan_of(
    customer: AssignedPlan, subscription: MirroredSubscription | None, default_plan: str | None
) -> CustomerPlan:
    """Return the customer's plan and status from its row and its mirrored subscription."""
    return customer_plan(
        subscription_plan=subscription.plan if subscription is not None else None,
        subscription_status=subscription.status if subscription is not None else None,
        cancel_at_period_end=bool(subscription is not None and subscription.cancel_at_period_end),
        cancel_at=subscription.cancel_at if subscription is not None else None,
        assigned_plan=customer.plan,
        offline=customer.offline,
        default_plan=default_plan,
    )


def customer_currency(
    *, fixed: str | None, requested: str | None, catalog_currency: str
) -> tuple[str, bool]:
    """Return the currency to bill in, and whether a subscription has fixed it already."""
    if fixed:
        return fixed, True
    return requested or catalog_currency, False


# -- what a request asks for -----------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """A plan at a price: what a subscription bills, per interval, in one currency."""

    plan: Plan
    price: PlanPrice
    seats: int
    overage_features: tuple[str, ...]

    @property
    def interval(self) -> str:
        return str(self.price.interval)

    @property
    def currency(self) -> str:
        return self.price.currency

    @property
    def quantity(self) -> int:
        """Return the quantity of the plan's price: the seat count on a per-seat plan, else 1."""
        return self.seats if self.plan.per_seat else 1

    @property
    def lookup_key(self) -> str:
        return base_price_lookup_key(self.plan.id, self.interval, self.currency, self.plan.version)

    @property
    def overage_lookup_keys(self) -> dict[str, str]:
        """Return each metered feature's overage price lookup key, by feature."""
        return {
            feature: overage_price_lookup_key(
                self.plan.id, feature, self.interval, self.currency, self.plan.version
            )
            for feature in self.overage_features
        }


def find_plan(catalog: Catalog, plan_id: str) -> Plan:
    """Return the catalog's plan; an unknown one is a 400 on the `plan` parameter."""
    try:
        return catalog.plan(plan_id)
    except NotFound as error:
        raise InvalidRequest(error.message, param="plan") from None


def check_seats(plan: Plan, seats: int | None) -> int:
    """Return the seat count to bill for the plan, refusing one outside its bounds."""
    if seats is not None and seats < 1:
        raise InvalidRequest(f"seats must be at least 1, not {seats}", param="seats")
    policy = plan.seats
    if policy is None:
        if seats not in (None, 1):
            raise InvalidRequest(
                f"plan {plan.id!r} is not priced per seat; leave seats out", param="seats"
            )
        return 1
    if seats is None:
        return policy.min
    if seats < policy.min or (policy.max is not None and seats > policy.max):
        bounds = f"{policy.min} to {policy.max}" if policy.max else f"at least {policy.min}"
        raise InvalidRequest(f"plan {plan.id!r} takes {bounds} seats, not {seats}", param="seats")
    return seats


def subscription_terms(
    catalog: Catalog, *, plan_id: str, interval: str, currency: str, seats: int | None
) -> Terms:
    """Return the terms of a paid plan, or raise InvalidRequest naming what is wrong."""
    plan = find_plan(catalog, plan_id)
    if plan.is_free:
        raise InvalidRequest(
            f"plan {plan.id!r} is free: it needs no Stripe subscription "
            "(cancel the subscription to return to it)",
            param="plan",
        )
    price = plan.price_for(interval, currency)
    overage = tuple(
        feature_id
        for feature_id, grant in plan.features.items()
        if grant.type is FeatureType.METERED
        and grant.overage is not None
        and currency in grant.overage.amount_minor_by_currency
    )
    return Terms(plan, price, check_seats(plan, seats), overage)


def trial_days_for(plan: Plan, requested: int | None) -> int:
    """Return the trial days: the request's, else the plan's."""
    if requested is None:
        return plan.trial_days
    if not 0 <= requested <= MAX_TRIAL_DAYS:
        raise InvalidRequest(
            f"trial_days must be from 0 to {MAX_TRIAL_DAYS}, not {requested}", param="trial_days"
        )
    return requested


@dataclass(frozen=True)
class Collection:
    """How Stripe collects a subscription's invoices."""

    method: str
    days_until_due: int | None


# A bank transfer takes days: its invoice is sent, due in this many days unless the request or
# the plan says otherwise.
BANK_TRANSFER_DAYS_UNTIL_DUE = 30
# Stripe's bank transfer type per currency (`bank_transfer[type]`); EUR transfers need the
# customer's country as well and are not offered here.
BANK_TRANSFER_TYPES = {
    "usd": "us_bank_transfer",
    "gbp": "gb_bank_transfer",
    "jpy": "jp_bank_transfer",
    "mxn": "mx_bank_transfer",
}


def bank_transfer_settings(currency: str) -> dict[str, Any]:
    """Return the `payment_settings` of invoices paid by bank transfer in `currency`."""
    kind = BANK_TRANSFER_TYPES.get(currency.lower())
    if kind is None:
        raise InvalidRequest(
            f"bank transfers are offered in {', '.join(sorted(BANK_TRANSFER_TYPES))}, "
            f"not {currency.lower()}",
            param="payment_method",
        )
    return {
        "payment_method_types": [BANK_TRANSFER],
        "payment_method_options": {
            BANK_TRANSFER: {"funding_type": "bank_transfer", "bank_transfer": {"type": kind}}
        },
    }


def collection_for(
    plan: Plan,
    *,
    method: str | None,
    days_until_due: int | None,
    payment_method: str | None = None,
) -> Collection:
    """Return the request's collection method, else the plan's, checked as Stripe would.

    Paid by bank transfer (`payment_method=customer_balance`), invoices are sent and due in
    days: a transfer cannot be charged.
    """
    if payment_method is not None and payment_method != BANK_TRANSFER:
        raise InvalidRequest(
            f"payment_method {payment_method!r}: only {BANK_TRANSFER} (bank transfer) may be "
            "named; a card or bank debit is the customer's default payment method",
            param="payment_method",
        )
    if payment_method == BANK_TRANSFER:
        if method not in (None, CollectionMethod.SEND_INVOICE):
            raise InvalidRequest(
                "a bank transfer cannot be charged: use collection_method send_invoice",
                param="collection_method",
            )
        method = str(CollectionMethod.SEND_INVOICE)
        if days_until_due is None:
            days_until_due = plan.days_until_due or BANK_TRANSFER_DAYS_UNTIL_DUE
    if method is None:
        method = str(plan.collection_method)
        if days_until_due is None:
            days_until_due = plan.days_until_due
    if method not in {member.value for member in CollectionMethod}:
        raise InvalidRequest(
            f"{method!r} is not a collection method (charge_automatically, send_invoice)",
            param="collection_method",
        )
    if method == CollectionMethod.SEND_INVOICE:
        if days_until_due is None:
            raise InvalidRequest(
                "send_invoice needs days_until_due (1 to 365)", param="days_until_due"
            )
        if not 1 <= days_until_due <= MAX_DAYS_UNTIL_DUE:
            raise InvalidRequest(
                f"days_until_due must be from 1 to {MAX_DAYS_UNTIL_DUE}, not {days_until_due}",
                param="days_until_due",
            )
        return Collection(method, days_until_due)
    if days_until_due is not None:
        raise InvalidRequest(
            "days_until_due only applies with collection_method send_invoice",
            param="days_until_due",
        )
    return Collection(method, None)


def check_proration(value: str | None, default: str) -> str:
    """Return the proration behaviour asked for, else the configured one."""
    if value is None:
        return default
    if value not in PRORATION_BEHAVIORS:
        raise InvalidRequest(
            f"{value!r} is not a proration behaviour ({', '.join(PRORATION_BEHAVIORS)})",
            param="proration",
        )
    return value


# -- changing a subscription -----------------------------------------------------------------


class ChangeTiming(StrEnum):
    """When a change to a subscription takes effect."""

    NOW = "now"
    PERIOD_END = "period_end"
    NOTHING = "nothing"


@dataclass(frozen=True)
class CurrentTerms:
    """What a live subscription bills now, as Stripe has it."""

    plan: str | None
    interval: str | None
    currency: str
    seats: int
    amount_minor: int | None


def change_timing(
    current: CurrentTerms, wanted: Terms, *, at_period_end: bool | None
) -> ChangeTiming:
    """Decide when a change applies: an upgrade now, a downgrade at period end (unless asked).

    A change is an upgrade when it moves to a longer interval, or costs more a month at the same
    interval; more seats count as an upgrade, fewer as a downgrade.
    """
    same_plan = current.plan == wanted.plan.id and current.interval == wanted.interval
    if same_plan and current.seats == wanted.quantity:
        return ChangeTiming.NOTHING
    if at_period_end is not None:
        return ChangeTiming.PERIOD_END if at_period_end else ChangeTiming.NOW
    order = list(Interval)
    if current.interval in {i.value for i in Interval} and current.interval != wanted.interval:
        longer = order.index(Interval(wanted.interval)) > order.index(Interval(current.interval))
        return ChangeTiming.NOW if longer else ChangeTiming.PERIOD_END
    if current.amount_minor is None:
        return ChangeTiming.NOW
    before = current.amount_minor * current.seats
    after = wanted.price.amount_minor * wanted.quantity
    return ChangeTiming.NOW if after >= before else ChangeTiming.PERIOD_END


def seats_after(current: int, requested: int, behavior: str) -> int:
    """Return the seat count to bill: the request's, except `incremental` never goes down."""
    if behavior not in SEAT_CHANGE_BEHAVIORS:
        raise InvalidRequest(
            f"{behavior!r} is not a seat change behaviour ({', '.join(SEAT_CHANGE_BEHAVIORS)})",
            param="seat_change_behavior",
        )
    if behavior == "incremental":
        return max(current, requested)
    return requested


def is_live(status: str | None) -> bool:
    """Return whether a Stripe subscription in this status still holds a plan."""
    return status is not None and status not in ENDED_STATUSES


# -- request input ---------------------------------------------------------------------------


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Return metadata as Stripe keeps it (text keys and values), refusing what it would."""
    if metadata is None:
        return {}
    if len(metadata) > METADATA_KEYS_MAX:
        raise InvalidRequest(
            f"metadata may have at most {METADATA_KEYS_MAX} keys", param="metadata"
        )
    clean: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > METADATA_KEY_LIMIT or "[" in key:
            raise InvalidRequest(
                f"metadata key {key!r} must be 1 to {METADATA_KEY_LIMIT} characters without '['",
                param="metadata",
            )
        if key in RESERVED_METADATA_KEYS:
            raise InvalidRequest(
                f"metadata key {key!r} is Tollgate's own (it holds the customer's id)",
                param=f"metadata.{key}",
            )
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidRequest(
                f"metadata value of {key!r} must be text or a whole number",
                param=f"metadata.{key}",
            )
        text = str(value)
        if len(text) > METADATA_VALUE_LIMIT:
            raise InvalidRequest(
                f"metadata value of {key!r} is longer than {METADATA_VALUE_LIMIT} characters",
                param=f"metadata.{key}",
            )
        clean[key] = text
    return clean


def fingerprint(values: Mapping[str, Any]) -> str:
    """Return a stable SHA-256 of a request's content, to recognise the same request again."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def request_id(idempotency_key: str | None, content: Mapping[str, Any], *state: Any) -> str:
    """Return the id that names a write in Stripe's idempotency keys.

    The app's `Idempotency-Key` when it sent one; otherwise a hash of what was asked and of the
    state it was asked in, so the same request repeated in the same state makes one object.
    """
    if idempotency_key:
        return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return fingerprint({"content": dict(content), "state": list(state)})[:32]


def trial_cause(subscription_id: str, trial_end: datetime | None) -> str:
    """Return the cause of a trial's emails: one of each per subscription and trial end."""
    stamp = str(int(trial_end.timestamp())) if trial_end is not None else "none"
    return f"{subscription_id}:{stamp}"
