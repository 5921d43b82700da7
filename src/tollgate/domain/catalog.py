"""The plans catalog ("plans as code") as immutable domain objects (read by .catalog_parser)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.money import Money, normalize_currency

ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
UNLIMITED = "unlimited"
DEFAULT_CURRENCY = "usd"
DEFAULT_WARN_AT = (80, 100)
MAX_TRIAL_DAYS = 730
MAX_DAYS_UNTIL_DUE = 365


class FeatureType(StrEnum):
    """How a feature is granted: on/off, a count, metered usage, or seats."""

    BOOLEAN = "boolean"
    LIMIT = "limit"
    METERED = "metered"
    SEATS = "seats"


class Aggregation(StrEnum):
    """How a metered feature's usage in a period adds up."""

    SUM = "sum"
    MAX = "max"
    LAST = "last"


class Interval(StrEnum):
    """A billing interval."""

    MONTH = "month"
    YEAR = "year"


class CollectionMethod(StrEnum):
    """How Stripe collects a subscription's invoices."""

    CHARGE_AUTOMATICALLY = "charge_automatically"
    SEND_INVOICE = "send_invoice"


@dataclass(frozen=True)
class Feature:
    """Something a plan grants; `unit` and `aggregation` matter only for metered features."""

    id: str
    type: FeatureType
    name: str
    unit: str | None = None
    aggregation: Aggregation = Aggregation.SUM
    # Credits one unit of a metered feature burns (None: not priced in credits).
    credits_per_unit: int | None = None


@dataclass(frozen=True)
class Overage:
    """The price of usage beyond what is included: amount (minor units) per `per` units."""

    amount_minor_by_currency: dict[str, Decimal]
    per: int = 1

    def amount_in(self, currency: str) -> Decimal:
        """Return the price of `per` units in the currency, in (possibly sub-) minor units."""
        return self.amount_minor_by_currency[normalize_currency(currency)]


WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """A hard limit on usage within a fixed time window (besides the billing period's)."""

    limit: int
    per: str  # minute | hour | day

    @property
    def seconds(self) -> int:
        return WINDOWS[self.per]


@dataclass(frozen=True)
class PlanFeature:
    """What one plan grants of one feature.

    `limit` is the most that may be used (None = no cap): the count of a limit feature, or the
    included quantity of a metered feature with a hard limit. `included` (None = unlimited) is the
    metered quantity covered by the plan's price; `hard` means use past it is refused.
    """

    feature: str
    type: FeatureType
    enabled: bool
    limit: int | None = None
    included: int | None = None
    overage: Overage | None = None
    hard: bool = True
    warn_at: tuple[int, ...] = ()
    rate: Rate | None = None  # metered: at most `limit` per minute, hour or day

    @classmethod
    def seats(cls, feature: Feature, policy: SeatPolicy | None) -> PlanFeature:
        """Return the seats grant: capped by a per-seat plan's maximum, else not counted."""
        # A flat-priced plan charges the same for any number of seats, so it does not cap them.
        return cls(feature.id, feature.type, enabled=True, limit=policy.max if policy else None)

    @classmethod
    def off(cls, feature: Feature) -> PlanFeature:
        """Return the grant of a feature that a plan does not list."""
        if feature.type is FeatureType.BOOLEAN:
            return cls(feature.id, feature.type, enabled=False)
        if feature.type is FeatureType.METERED:
            return cls(feature.id, feature.type, enabled=False, limit=0, included=0)
        return cls(feature.id, feature.type, enabled=False, limit=0)


@dataclass(frozen=True)
class PlanPrice:
    """A recurring price of a plan (per seat for per-seat plans)."""

    interval: Interval
    currency: str
    amount_minor: int

    @property
    def money(self) -> Money:
        """Return the amount as Money."""
        return Money(self.amount_minor, self.currency)


@dataclass(frozen=True)
class SeatPolicy:
    """Bounds on the seat count of a per-seat plan; `max` None means no maximum."""

    min: int = 1
    max: int | None = None


@dataclass(frozen=True)
class PaymentMethods:
    """Which payment methods a plan accepts, and up to how much a card may pay per invoice.

    `card_limit` is in minor units per currency; a currency it does not name falls back to
    TOLLGATE_CARD_LIMITS.
    """

    accept: tuple[str, ...]
    card_limit: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A plan: its prices, what it grants, and how it is sold and billed."""

    id: str
    name: str
    prices: tuple[PlanPrice, ...] = ()
    features: dict[str, PlanFeature] = field(default_factory=dict)
    trial_days: int = 0
    custom: bool = False
    seats: SeatPolicy | None = None
    collection_method: CollectionMethod = CollectionMethod.CHARGE_AUTOMATICALLY
    days_until_due: int | None = None
    # Credits granted at the start of each billing period (they expire when it ends).
    on_start_credits: int = 0
    # Credits dripped at the start of each month of a period (`credits: {amount, every: month}`):
    # an annual plan's monthly allowance; each month's expire when the next begins.
    monthly_credits: int = 0
    # The plan whose features a past-due customer keeps after the grace period (None: default).
    reduced_access: str | None = None
    # Which version of the plan this is (issue 20): a change to its prices or features makes a
    # new one when the catalog is synced; subscribers keep theirs until migrated.
    version: int = 1
    # Which payment methods may pay the plan's invoices (issue 21); None: any, by the settings.
    payment_methods: PaymentMethods | None = None

    @property
    def is_free(self) -> bool:
        """Return whether the plan has no price (no Stripe subscription needed)."""
        return not self.prices

    @property
    def per_seat(self) -> bool:
        """Return whether the plan is priced per seat (subscription quantity = seats)."""
        return self.seats is not None

    @property
    def currencies(self) -> tuple[str, ...]:
        """Return the currencies the plan is priced in, sorted."""
        return tuple(sorted({price.currency for price in self.prices}))

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """Return the billing intervals the plan is offered in, month first."""
        offered = {price.interval for price in self.prices}
        return tuple(interval for interval in Interval if interval in offered)

    def feature(self, feature_id: str) -> PlanFeature:
        """Return what the plan grants of a feature, or raise NotFound."""
        return _known(self.features, feature_id, "feature")

    def price_for(self, interval: str, currency: str) -> PlanPrice:
        """Return the plan's price for the interval and currency, or raise InvalidRequest."""
        if self.is_free:
            raise InvalidRequest(f"plan {self.id!r} is free and has no prices", param="plan")
        if interval not in {member.value for member in Interval}:
            raise InvalidRequest(
                f"{interval!r} is not a billing interval (intervals are: month, year)",
                param="interval",
            )
        try:
            code = normalize_currency(currency)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="currency") from None
        for price in self.prices:
            if price.interval == interval and price.currency == code:
                return price
        if code not in self.currencies:
            raise InvalidRequest(
                f"plan {self.id!r} has no price in {code}; "
                f"it is priced in {', '.join(self.currencies)}",
                param="currency",
            )
        in_currency = sorted(
            {price.interval for price in self.prices if price.currency == code},
            key=list(Interval).index,
        )
        raise InvalidRequest(
            f"plan {self.id!r} has no {interval} price in {code}; "
            f"in {code} it is billed per {', '.join(in_currency)}",
            param="interval",
        )


@dataclass(frozen=True)
class OneTimePrice:
    """A price paid once (a credit pack, or one overdrawn credit)."""

    currency: str
    amount_minor: int


@dataclass(frozen=True)
class CreditPack:
    """Credits sold together through Checkout for a one-time price per currency."""

    id: str
    name: str
    credits: int
    prices: tuple[OneTimePrice, ...]

    def price_in(self, currency: str) -> OneTimePrice | None:
        """Return the pack's price in the currency, if it has one."""
        return next((price for price in self.prices if price.currency == currency), None)


@dataclass(frozen=True)
class CreditProduct:
    """What one overdrawn credit costs when the overdraft is invoiced (the first price is used)."""

    name: str
    prices: tuple[OneTimePrice, ...]


@dataclass(frozen=True)
class Catalog:
    """The whole catalog: features, plans and where customers without a subscription land."""

    currency: str
    default_plan: str | None
    features: dict[str, Feature]
    plans: dict[str, Plan]
    credit_packs: dict[str, CreditPack] = field(default_factory=dict)
    credit_overdraft_product: CreditProduct | None = None
    # Issue 20: the synced catalog's version (None: read from the file, never synced), the
    # earlier versions of each plan that subscribers may still be on, and the document the
    # catalog was read from (canonical JSON), so a sync can store it for every process.
    version: int | None = None
    plan_versions: dict[str, dict[int, Plan]] = field(default_factory=dict)
    source_json: str | None = field(default=None, compare=False, repr=False)
    # Customers may set their own spend cap (the billing page; `by_customer` over the API).
    customer_spend_caps: bool = False
    coupons: dict[str, Coupon] = field(default_factory=dict)
    addons: dict[str, AddOn] = field(default_factory=dict)

    @property
    def currencies(self) -> tuple[str, ...]:
        """Return every currency some plan is priced in, sorted."""
        return tuple(sorted({code for plan in self.plans.values() for code in plan.currencies}))

    def plan(self, plan_id: str) -> Plan:
        """Return the plan, or raise NotFound naming the plans there are."""
        return _known(self.plans, plan_id, "plan")

    def feature(self, feature_id: str) -> Feature:
        """Return the feature, or raise NotFound naming the features there are."""
        return _known(self.features, feature_id, "feature")

    def plan_version(self, plan_id: str, version: int | None) -> Plan:
        """Return the plan as it was at `version` (the current one when None or unknown)."""
        plan = self.plan(plan_id)
        if version is None or version == plan.version:
            return plan
        return self.plan_versions.get(plan_id, {}).get(version, plan)

    def with_plan_version(self, plan_id: str | None, version: int | None) -> Catalog:
        """Return this catalog with `plan_id` as it was at `version` (a grandfathered view)."""
        if plan_id is None or version is None or plan_id not in self.plans:
            return self
        plan = self.plan_version(plan_id, version)
        if plan is self.plans[plan_id]:
            return self
        return replace(self, plans={**self.plans, plan_id: plan})


_Item = TypeVar("_Item")


def _known(items: Mapping[str, _Item], key: str, kind: str) -> _Item:
    """Return `items[key]`, or raise NotFound naming the `kind`s there are."""
    try:
        return items[key]
    except KeyError:
        raise NotFound(
            f"unknown {kind} {key!r} ({kind}s are: {listing(items)})", param=kind
        ) from None


def listing(ids: Iterable[str]) -> str:
    """Return ids for a message: sorted, comma-separated ("none" when there are none)."""
    return ", ".join(sorted(ids)) or "none"


# -- coupons and add-ons (issue 20; read by .catalog_extras) ----------------------------------


class CouponDuration(StrEnum):
    """How long a coupon's discount lasts on a subscription."""

    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


@dataclass(frozen=True)
class Coupon:
    """A discount: percent off, or an amount off per currency; optionally limited to plans."""

    id: str
    name: str
    duration: CouponDuration
    percent_off: Decimal | None = None
    amount_off: dict[str, int] = field(default_factory=dict)  # minor units by currency
    duration_in_months: int | None = None
    max_redemptions: int | None = None
    redeem_by: datetime | None = None
    plans: tuple[str, ...] = ()  # empty: any plan
    promotion_codes: tuple[str, ...] = ()  # codes a buyer may type at Checkout

    def applies_to(self, plan_id: str) -> bool:
        """Return whether the coupon may discount the plan."""
        return not self.plans or plan_id in self.plans


@dataclass(frozen=True)
class AddOn:
    """Something sold beside a plan as its own subscription item: extra included usage, a
    feature, or capacity. `grants` says what one unit adds: a count, or True for a feature."""

    id: str
    name: str
    prices: tuple[PlanPrice, ...]
    grants: dict[str, int | bool] = field(default_factory=dict)
    plans: tuple[str, ...] = ()  # empty: any paid plan
    max_quantity: int | None = None

    def price_for(self, interval: str, currency: str) -> PlanPrice | None:
        """Return the add-on's price for the interval and currency, if it has one."""
        return next(
            (p for p in self.prices if p.interval == interval and p.currency == currency), None
        )
