"""Request and response shapes of the API."""

from __future__ import annotations

from typing import Any

from tollgate.domain.catalog import Catalog, Plan, PlanFeature
from tollgate.money import Money


def _feature_json(feature: PlanFeature) -> dict[str, Any]:
    return {
        key: value
        for key, value in {
            "enabled": feature.enabled,
            "limit": feature.limit,
            "included": feature.included,
            "hard": feature.hard,
            "overage": (
                {
                    "per": feature.overage.per,
                    "amount_minor_by_currency": {
                        currency: str(amount)
                        for currency, amount in feature.overage.amount_minor_by_currency.items()
                    },
                }
                if feature.overage
                else None
            ),
        }.items()
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "name": plan.name,
        "custom": plan.custom,
        "trial_days": plan.trial_days,
        "seats": {"min": plan.seats.min, "max": plan.seats.max} if plan.seats else None,
        "prices": [
            {"interval": price.interval, **Money(price.amount_minor, price.currency).to_json()}
            for price in plan.prices
        ],
        "features": {
            feature_id: _feature_json(value) for feature_id, value in plan.features.items()
        },
    }


def catalog_json(catalog: Catalog) -> dict[str, Any]:
    return {
        "currency": catalog.currency,
        "default_plan": catalog.default_plan,
        "features": {
            feature.id: {"type": str(feature.type), "name": feature.name, "unit": feature.unit}
            for feature in catalog.features.values()
        },
        "plans": [plan_json(plan) for plan in catalog.plans.values()],
    }
