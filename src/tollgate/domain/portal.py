"""The Customer Portal configuration the catalog implies (issue 20).

Plan and interval switching among the self-serve plans' current versions (not custom, not
free), seat quantities within each per-seat plan's bounds, cancellation at period end with a
reason, card and invoice history. Its terms are fingerprinted into its metadata, so Tollgate
updates the configuration only when the catalog (or the proration setting) changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tollgate.domain.catalog import Catalog, Plan, PlanPrice
from tollgate.domain.catalog_sync import base_price_lookup_key, plan_product_id
from tollgate.domain.payment_limits import CARD, policy_for

CANCELLATION_REASONS = (
    "too_expensive",
    "missing_features",
    "switched_service",
    "unused",
    "customer_service",
    "too_complex",
    "low_quality",
    "other",
)


def self_serve_plans(catalog: Catalog) -> list[Plan]:
    """Return the plans a customer may switch to on its own: priced, not sales-led."""
    return [plan for plan in catalog.plans.values() if plan.prices and not plan.custom]


def portal_lookup_keys(catalog: Catalog) -> list[str]:
    """Return the lookup keys of the prices the Portal offers (the current versions')."""
    return [
        base_price_lookup_key(plan.id, price.interval, price.currency, plan.version)
        for plan in self_serve_plans(catalog)
        for price in plan.prices
    ]


def _card_may_pay(plan: Plan, price: PlanPrice, card_limits: Mapping[str, int]) -> bool:
    """Return whether a card may pay a period of the price (at the plan's fewest seats)."""
    policy = policy_for(plan, card_limits)
    if CARD not in policy.accept:
        return False
    amount = price.amount_minor * (plan.seats.min if plan.seats is not None else 1)
    return CARD in policy.methods_for(amount, price.currency)


def portal_configuration_params(
    catalog: Catalog,
    price_ids: Mapping[str, str],
    proration_behavior: str,
    card_limits: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Return the Portal configuration's parameters (metadata carries their fingerprint).

    The Portal switches plans for whoever opens it, card payers included, so it offers only
    the prices a card may pay (issue 21): a plan above the card limit is taken through the API
    or Checkout, which offer the methods that may pay it.
    """
    products = []
    seats = False
    for plan in self_serve_plans(catalog):
        prices = [
            price_ids[base_price_lookup_key(plan.id, p.interval, p.currency, plan.version)]
            for p in plan.prices
            if _card_may_pay(plan, p, card_limits or {})
        ]
        if not prices:
            continue
        product: dict[str, Any] = {"product": plan_product_id(plan.id), "prices": prices}
        if plan.seats is not None:
            seats = True
            quantity: dict[str, Any] = {"enabled": True, "minimum": plan.seats.min}
            if plan.seats.max is not None:
                quantity["maximum"] = plan.seats.max
            product["adjustable_quantity"] = quantity
        products.append(product)
    allowed = ["price", "quantity"] if seats else ["price"]
    params: dict[str, Any] = {
        "business_profile": {"headline": "Manage your plan"},
        "features": {
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {
                "enabled": True,
                "mode": "at_period_end",
                "cancellation_reason": {"enabled": True, "options": list(CANCELLATION_REASONS)},
            },
            "subscription_update": {
                "enabled": bool(products),
                "default_allowed_updates": allowed if products else [],
                "proration_behavior": proration_behavior,
                "products": products,
            },
        },
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    params["metadata"] = {"tollgate_portal": "true", "tollgate_terms": digest}
    return params
