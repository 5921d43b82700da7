"""The catalog: products, prices and the legacy plan view of a recurring price."""

from __future__ import annotations

from typing import Any

from stripesim.objects.base import template


@template("product")
def product() -> dict[str, Any]:
    return {
        "active": True,
        "created": 0,
        "default_price": None,
        "description": None,
        "id": "",
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": "",
        "object": "product",
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "unit_label": None,
        "updated": 0,
        "url": None,
        "type": "service",
    }


@template("price")
def price() -> dict[str, Any]:
    return {
        "active": True,
        "billing_scheme": "per_unit",
        "created": 0,
        "currency": "",
        "custom_unit_amount": None,
        "id": "",
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "object": "price",
        "product": "",
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    }


@template("plan")
def plan() -> dict[str, Any]:
    return {
        "active": True,
        "amount": None,
        "amount_decimal": None,
        "billing_scheme": "per_unit",
        "created": 0,
        "currency": "",
        "id": "",
        "interval": "month",
        "interval_count": 1,
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": None,
        "object": "plan",
        "product": None,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
