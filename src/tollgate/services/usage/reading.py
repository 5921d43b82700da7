"""Read a customer's usage this period: used of included per meter, and the overage so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tollgate.domain.catalog import FeatureType
from tollgate.domain.errors import NotFound
from tollgate.domain.metering import Period, overage_minor, overage_units, percent_used
from tollgate.money import Money
from tollgate.services.deps import Deps
from tollgate.services.entitlements import load_billing_customers, period_position
from tollgate.services.usage.counters import granted


@dataclass(frozen=True)
class MeterUsage:
    """One meter this period: used of included, and what the overage comes to so far."""

    meter: str
    name: str
    unit: str | None
    used: int
    included: int | None
    limit: int | None
    hard: bool
    percent: float | None
    overage: int
    estimated_overage: Money | None
    period: Period
    days_left: int
    held: int = 0  # units reservations hold (not used yet; counted against a hard limit)

    def to_json(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "name": self.name,
            "unit": self.unit,
            "used": self.used,
            "held": self.held,
            "included": self.included,
            "limit": self.limit,
            "hard": self.hard,
            "percentage": self.percent,
            "overage": self.overage,
            "estimated_overage": self.estimated_overage.to_json()
            if self.estimated_overage
            else None,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "days_left": self.days_left,
        }


@dataclass(frozen=True)
class CustomerUsage:
    customer: str
    plan: str | None
    status: str
    period: Period
    meters: list[MeterUsage]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "plan": self.plan,
            "status": self.status,
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "meters": {meter.meter: meter.to_json() for meter in self.meters},
        }


def get_usage(
    deps: Deps,
    *,
    customer_id: str,
) -> CustomerUsage:
    """Return the customer's usage this period per meter."""
    db, catalog, clock, grace = deps.db, deps.catalog, deps.clock, deps.grace
    now = clock.now()
    with db.engine.connect() as connection:
        customer = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        used, held = period_position(connection, customer_id, customer.period)
        connection.rollback()
    grants = granted(catalog, customer, now, grace)
    meters = []
    for feature_id, feature in catalog.features.items():
        if feature.type is not FeatureType.METERED:
            continue
        grant = grants[feature_id]
        value = used.get(feature_id, 0)
        overage = overage_units(grant, value)
        estimate = None
        if grant.overage is not None and not grant.hard:
            try:
                estimate = Money(
                    overage_minor(grant.overage, overage, customer.currency), customer.currency
                )
            except KeyError:
                estimate = None
        meters.append(
            MeterUsage(
                meter=feature_id,
                name=feature.name,
                unit=feature.unit,
                used=value,
                included=grant.included,
                limit=grant.limit,
                hard=grant.hard,
                percent=percent_used(value, grant.included),
                overage=overage,
                estimated_overage=estimate,
                period=customer.period,
                days_left=customer.period.days_left(now),
                held=held.get(feature_id, 0),
            )
        )
    return CustomerUsage(customer.id, customer.plan, customer.status, customer.period, meters)
