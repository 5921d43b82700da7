"""Usage metering rules: billing periods, aggregation, limits, thresholds and overage."""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TypeVar

from tollgate.domain.catalog import Aggregation, Overage, PlanFeature

MAX_BATCH = 1000
# How far ahead of the server's clock a usage timestamp may be (clock skew between hosts).
FUTURE_TOLERANCE = timedelta(minutes=5)

Key = TypeVar("Key")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open billing period [start, end) in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def days_left(self, now: datetime) -> int:
        """Return the whole days until the period ends, counting a part day as one."""
        seconds = (self.end - now).total_seconds()
        return max(0, math.ceil(seconds / 86400))


def add_months(moment: datetime, months: int) -> datetime:
    """Return the same day and time `months` later (earlier when negative), on the month's last
    day when that month is shorter."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def calendar_month(moment: datetime) -> Period:
    """Return the UTC calendar month holding `moment` (the period of customers without Stripe)."""
    moment = moment.astimezone(UTC)
    return _month(moment.year, moment.month)


@lru_cache(maxsize=64)  # asked for every customer without Stripe in every usage batch
def _month(year: int, month: int) -> Period:
    start = datetime(year, month, 1, tzinfo=UTC)
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return Period(start, datetime(year, month, 1, tzinfo=UTC))


def open_period(
    subscription_start: datetime | None, subscription_end: datetime | None, now: datetime
) -> Period:
    """Return the period usage counts in now: the subscription's current one, else the month."""
    if subscription_start is not None and subscription_end is not None:
        return Period(subscription_start, subscription_end)
    return calendar_month(now)


def usage_timestamp_problem(occurred_at: datetime, period: Period, now: datetime) -> str | None:
    """Return why a usage timestamp cannot count in the open period, or None if it can."""
    if occurred_at > now + FUTURE_TOLERANCE:
        return (
            f"timestamp {occurred_at.isoformat()} is more than 5 minutes in the future "
            f"(server time {now.isoformat()})"
        )
    if occurred_at < period.start:
        return (
            f"timestamp {occurred_at.isoformat()} is before the open billing period, "
            f"which started {period.start.isoformat()}"
        )
    if occurred_at >= period.end:
        return (
            f"timestamp {occurred_at.isoformat()} is after the billing period that ends "
            f"{period.end.isoformat()}; the renewal has not been seen yet, retry shortly"
        )
    return None


# Aggregations as module constants for the per-event paths: on Python 3.11 `Aggregation.SUM`
# goes through the enum class's `__getattr__` hook, some 900 instructions a lookup.
_SUM, _MAX, _LAST = Aggregation.SUM, Aggregation.MAX, Aggregation.LAST


@dataclass(slots=True)
class Counter:
    """A customer's aggregate of one meter in one period, as it changes within a batch.

    `last_at`/`last_id` order `last` aggregation by the events' own time, so events that arrive
    out of order still end at the value of the latest one.
    """

    value: int
    last_at: datetime | None = None
    last_id: str | None = None

    def after(self, aggregation: Aggregation, value: int) -> int:
        """Return what the aggregate would become with one more event of `value`."""
        return aggregate(aggregation, self.value, value)

    def add(
        self, aggregation: Aggregation, value: int, occurred_at: datetime, event_id: str
    ) -> None:
        """Count one event."""
        if aggregation is _LAST:
            if self.last_at is not None and (occurred_at, event_id) < (
                self.last_at,
                self.last_id or "",
            ):
                return  # an older reading than the one the counter holds
            self.value = value
            self.last_at, self.last_id = occurred_at, event_id
        elif aggregation is _SUM:  # most meters: one call per event, not two
            self.value += value
        else:
            self.value = max(self.value, value)


def aggregate(aggregation: Aggregation, current: int, value: int) -> int:
    """Return what an aggregate at `current` becomes with one more event of `value`."""
    if aggregation is _SUM:
        return current + value
    if aggregation is _MAX:
        return max(current, value)
    return value


def enforced_limit(grant: PlanFeature, enforce: bool) -> int | None:
    """Return the hard limit usage may not pass (None: none, or not enforced)."""
    return grant.limit if enforce and grant.hard else None


def over_limit(
    counter: Counter,
    aggregation: Aggregation,
    value: int,
    limit: int | None,
    held: int = 0,
    hold: int = 0,
) -> bool:
    """Return whether one more event of `value` would take the counter past `limit`.

    Units reservations hold (`held`) count against the limit; `hold` is the change the event
    makes to them. An event that takes back at least what it adds (a reservation committed
    under what it held, or released) always fits: it never brings the total up.
    """
    if limit is None:
        return False
    if aggregation is _SUM and value + hold <= 0:
        return False
    return counter.after(aggregation, value) + held + hold > limit


def thresholds_due(
    grant: PlanFeature, before: int, after: int, recorded: int | None = None
) -> list[int]:
    """Return the warning percentages (of the included quantity) usage has reached at `after`
    and that are not recorded yet: those above `recorded`, the highest one known to be recorded,
    or when that is not known (None), those `before` had not reached."""
    included = grant.included
    if not included or not grant.warn_at:
        return []
    # Exact integer comparison: `after * 100 >= percent * included` means used >= percent %.
    floor = before * 100 if recorded is None else recorded * included
    top = after * 100
    due: list[int] = []  # a loop, not a comprehension's frame: every moved counter of a batch asks
    for percent in grant.warn_at:
        if floor < percent * included <= top:
            due.append(percent)
    return due


def crossed_thresholds(grant: PlanFeature, before: int, after: int) -> list[int]:
    """Return the warning percentages (of the included quantity) that usage crossed upward."""
    return thresholds_due(grant, before, after)


def overage_units(grant: PlanFeature, used: int) -> int:
    """Return the usage beyond what the plan includes that is billed as overage."""
    if grant.overage is None or grant.included is None or grant.hard:
        return 0
    return max(0, used - grant.included)


def overage_minor(overage: Overage, units: int, currency: str) -> int:
    """Return the price of `units` of overage in minor units: per started block of `per`."""
    if units <= 0:
        return 0
    blocks = -(-units // overage.per)
    amount = overage.amount_in(currency) * blocks
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def projected_usage(used: int, period: Period, at: datetime) -> int:
    """Return what usage comes to by the period's end if it goes on at the pace so far."""
    elapsed = (at - period.start).total_seconds()
    length = (period.end - period.start).total_seconds()
    if elapsed <= 0 or length <= 0:
        return used
    return max(used, math.ceil(used * length / min(elapsed, length)))


def percent_used(used: int, included: int | None) -> float | None:
    """Return usage as a percentage of the included quantity (None when unlimited or zero)."""
    if not included:
        return None
    return round(used * 100 / included, 2)


def usage_with_pending(
    rows: Iterable[tuple[str, int, datetime | None, str | None, str, int]],
) -> dict[str, int]:
    """Return usage per meter from counter rows and pending rows (meter, value, last at, last id,
    aggregation, held; an empty aggregation marks a counter row), pending ones folded in."""
    counters: dict[str, Counter] = {}
    pending = []
    for meter, value, last_at, last_id, aggregation, _ in rows:
        if aggregation:
            pending.append((meter, aggregation, value, last_at, last_id))
        else:
            counters[meter] = Counter(int(value), last_at, last_id)
    return {meter: counter.value for meter, counter in fold_pending(counters, pending).items()}


def held_with_pending(
    rows: Iterable[tuple[str, int, datetime | None, str | None, str, int]],
) -> dict[str, int]:
    """Return the units reservations hold per meter: the counters' and the pending changes."""
    held: dict[str, int] = {}
    for meter, _, _, _, _, units in rows:
        if units:
            held[meter] = held.get(meter, 0) + int(units)
    return {meter: units for meter, units in held.items() if units}


def fold_pending(
    counters: dict[Key, Counter],
    pending: Iterable[tuple[Key, str, int, datetime | None, str | None]],
) -> dict[Key, Counter]:
    """Fold pending rows (key, aggregation, value, last at, last id; oldest first) into
    `counters`, starting at zero where a key has none; return `counters`."""
    for key, aggregation, value, last_at, last_id in pending:
        assert last_at is not None  # every pending row holds its batch's latest time
        counter = counters.setdefault(key, Counter(0))
        counter.add(Aggregation(aggregation), int(value), last_at, last_id or "")
    return counters


# -- spend caps --------------------------------------------------------------------------------


def overage_spend(
    grants: Mapping[str, PlanFeature], usage: Mapping[str, int], currency: str
) -> dict[str, int]:
    """Return what each feature's overage comes to this period, in minor units."""
    spend: dict[str, int] = {}
    for feature_id, grant in grants.items():
        units = overage_units(grant, usage.get(feature_id, 0))
        if units and grant.overage is not None:
            try:
                spend[feature_id] = overage_minor(grant.overage, units, currency)
            except KeyError:
                continue
    return spend


def capped_limit(grant: PlanFeature, currency: str, budget_minor: int) -> int | None:
    """Return the most of a soft feature that may be used while its overage costs at most
    `budget_minor` (None: the feature has no priced overage, the cap does not apply).

    Exact to the minor unit: overage is billed per started block, so the limit is the included
    quantity plus the most whole blocks whose price (rounded as billed) fits the budget.
    """
    priced = _priced_overage(grant, currency)
    if priced is None:
        return None
    overage, included, price = priced
    per, budget = overage.per, max(0, budget_minor)

    def cost(blocks: int) -> int:
        return overage_minor(overage, blocks * per, currency)

    blocks = int(Decimal(budget) / price)
    while cost(blocks + 1) <= budget:  # a price rounded down as billed leaves room
        blocks += 1
    while blocks > 0 and cost(blocks) > budget:
        blocks -= 1
    return included + blocks * per


def _priced_overage(grant: PlanFeature, currency: str) -> tuple[Overage, int, Decimal] | None:
    """Return a soft feature's overage, included quantity and block price in the currency
    (None: the feature is hard, unlimited, or its overage is not priced above zero there)."""
    if grant.hard or grant.overage is None or grant.included is None:
        return None
    try:
        price = grant.overage.amount_in(currency)
    except KeyError:
        return None
    return (grant.overage, grant.included, price) if price > 0 else None


# -- usage alerts ------------------------------------------------------------------------------

ALERT_KINDS = ("units", "percent", "money")


def alert_units(kind: str, threshold: int, grant: PlanFeature, currency: str) -> int | None:
    """Return the usage at which an alert fires (None: it cannot, on this plan): `units`
    itself; `percent` of the included quantity; `money`, the first unit whose overage costs
    at least `threshold` minor units (overage is billed per started block)."""
    if kind == "units":
        return threshold
    if kind == "percent":
        if not grant.included:
            return None
        return max(1, -(-threshold * grant.included // 100))
    priced = _priced_overage(grant, currency)
    if priced is None:
        return None
    overage, included, price = priced
    if threshold <= 0:
        return included + 1
    blocks = max(1, int(Decimal(threshold) / price))
    while blocks > 1 and overage_minor(overage, (blocks - 1) * overage.per, currency) >= threshold:
        blocks -= 1
    while overage_minor(overage, blocks * overage.per, currency) < threshold:
        blocks += 1
    return included + (blocks - 1) * overage.per + 1
