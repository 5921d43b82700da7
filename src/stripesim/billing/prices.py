"""The prices a subscription bills: lookups, inline `price_data`, their embedded views, amounts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import objects
from stripesim.catalog import build_price, price_amount
from stripesim.errors import parameter_missing
from stripesim.lists import render
from stripesim.registry import Ctx


def price_param(ctx: Ctx, price_id: Any, param: str) -> dict[str, Any]:
    """Return the price a parameter names, or Stripe's missing or 404 error."""
    if not price_id:
        raise parameter_missing(param)
    return ctx.account.get(price_id, "price", param=param)


def item_price(ctx: Ctx, raw: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """Return the price an item names: `price`, or inline `price_data` (stored as a new price)."""
    if raw.get("price_data"):
        return build_price(ctx, dict(raw["price_data"]), param_prefix=f"{prefix}[price_data]")
    if raw.get("price") or raw.get("plan"):
        return price_param(ctx, raw.get("price") or raw.get("plan"), f"{prefix}[price]")
    return None


def current_price(ctx: Ctx, item: dict[str, Any]) -> dict[str, Any]:
    """Return the stored price of a subscription item (its embedded copy if the price is gone)."""
    return ctx.account.find(item["price"]["id"]) or item["price"]


def public_price(price: dict[str, Any]) -> dict[str, Any]:
    """Return the price as embedded in items and lines (without the engine-only `tiers`)."""
    return render({key: value for key, value in price.items() if key != "tiers"})


def product_name(ctx: Ctx, price: dict[str, Any]) -> str:
    """Return the name a line shows for a price: its product's, else its nickname or id."""
    product = ctx.account.find(price.get("product"))
    if product is not None and product.get("name"):
        return str(product["name"])
    return str(price.get("nickname") or price.get("product") or price["id"])


def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    """Return the legacy `plan` view of a recurring price, as Stripe still embeds it in items."""
    recurring = price.get("recurring") or {}
    plan = objects.new("plan")
    plan.update(
        active=price.get("active", True),
        amount=price.get("unit_amount"),
        amount_decimal=price.get("unit_amount_decimal"),
        billing_scheme=price.get("billing_scheme", "per_unit"),
        created=price.get("created"),
        currency=price.get("currency"),
        id=price["id"],
        interval=recurring.get("interval"),
        interval_count=recurring.get("interval_count", 1),
        metadata=dict(price.get("metadata") or {}),
        meter=recurring.get("meter"),
        nickname=price.get("nickname"),
        product=price.get("product"),
        tiers_mode=price.get("tiers_mode"),
        transform_usage=price.get("transform_quantity"),
        trial_period_days=recurring.get("trial_period_days"),
        usage_type=recurring.get("usage_type", "licensed"),
    )
    return plan


def exact_amount(price: dict[str, Any], quantity: int | Decimal) -> Decimal:
    """Return the exact amount of `quantity` units of `price` (tiers, transform, decimals)."""
    return price_amount(price, quantity)


def is_metered(price: dict[str, Any]) -> bool:
    """Tell whether a price bills metered usage (rather than a licensed quantity)."""
    return ((price.get("recurring") or {}).get("usage_type")) == "metered"
