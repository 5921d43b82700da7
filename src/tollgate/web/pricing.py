"""The pricing table from the catalog: self-serve plans side by side per interval and currency."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollgate.domain.catalog import Catalog, FeatureType, Plan
from tollgate.domain.wording import UnitName, count_text, overage_rate_text
from tollgate.money import format_minor


@dataclass(frozen=True)
class FeatureLine:
    text: str
    included: bool


@dataclass(frozen=True)
class PlanColumn:
    plan: Plan
    price: str
    per: str
    trial: str | None
    lines: list[FeatureLine] = field(default_factory=list)
    current: bool = False
    contact: bool = False


@dataclass(frozen=True)
class PricingTable:
    interval: str
    currency: str
    intervals: list[str]
    currencies: list[str]
    columns: list[PlanColumn]


def _features(catalog: Catalog, plan: Plan, currency: str) -> list[FeatureLine]:
    lines = []
    for feature_id, feature in catalog.features.items():
        grant = plan.features.get(feature_id)
        enabled = grant is not None and grant.enabled
        if feature.type is FeatureType.BOOLEAN:
            lines.append(FeatureLine(feature.name, enabled))
        elif feature.type is FeatureType.METERED:
            if grant is None or not enabled:
                lines.append(FeatureLine(feature.name, False))
                continue
            unit = UnitName(feature.unit or "unit")
            included = (
                f"{count_text(grant.included, unit)} included"
                if grant.included is not None
                else f"Unlimited {unit(2)}"
            )
            rate = overage_rate_text(grant.overage, currency, unit) if grant.overage else None
            if rate and not grant.hard:
                included += f", then {rate}"
            elif grant.included is not None:
                included += " (hard limit)"
            lines.append(FeatureLine(f"{feature.name}: {included}", True))
        elif feature.type is FeatureType.LIMIT:
            if grant is None or not enabled:
                lines.append(FeatureLine(feature.name, False))
            elif grant.limit is None:
                lines.append(FeatureLine(f"Unlimited {feature.name.lower()}", True))
            else:
                lines.append(FeatureLine(f"{feature.name}: up to {grant.limit:,}", True))
    return lines


def pricing_table(
    catalog: Catalog,
    *,
    interval: str | None,
    currency: str | None,
    current_plan: str | None = None,
) -> PricingTable:
    """Return the table for one interval and currency (defaults: month, the catalog's)."""
    prices = [price for plan in catalog.plans.values() for price in plan.prices]
    currencies = sorted({price.currency for price in prices})
    intervals = [i for i in ("month", "year") if any(price.interval == i for price in prices)]
    currency = currency if currency in currencies else catalog.currency
    interval = interval if interval in intervals else (intervals[0] if intervals else "month")
    columns = []
    for plan in catalog.plans.values():
        lines = _features(catalog, plan, currency)
        trial = f"{plan.trial_days}-day free trial" if plan.trial_days else None
        if plan.is_free:
            columns.append(
                PlanColumn(plan, "Free", "", None, lines, current=plan.id == current_plan)
            )
            continue
        price = next(
            (p for p in plan.prices if p.interval == interval and p.currency == currency), None
        )
        if price is None:
            continue
        per = f"per seat / {interval}" if plan.per_seat else f"per {interval}"
        columns.append(
            PlanColumn(
                plan,
                format_minor(price.amount_minor, currency),
                per,
                trial,
                lines,
                current=plan.id == current_plan,
                contact=plan.custom,
            )
        )
    return PricingTable(interval, currency, intervals, currencies, columns)
