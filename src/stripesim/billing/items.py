"""A subscription's items, its current period, and the `customer.subscription.updated` event."""

from __future__ import annotations

from typing import Any

from stripesim.billing.prices import is_metered, plan_of, public_price
from stripesim.errors import StripeError
from stripesim.lists import as_int, render, update_metadata
from stripesim.registry import Ctx
from stripesim.state import Account


def items_of(account: Account, sub: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the subscription's live items (stored objects), re-linked into `sub.items.data`."""
    found = [account.objects[item_id] for item_id in sub["_item_ids"] if item_id in account.objects]
    for item in found:
        price = account.find(item["price"]["id"])
        if price is not None:
            item["price"] = public_price(price)
            item["plan"] = plan_of(price)
    sub["items"]["data"] = found
    sub["items"]["total_count"] = len(found)
    return found


def emit_updated(
    ctx: Ctx,
    sub: dict[str, Any],
    before: dict[str, Any],
    now: int,
    event: str = "customer.subscription.updated",
) -> None:
    """Emit `customer.subscription.updated` with the top-level keys that changed."""
    items_of(ctx.account, sub)
    after = render(sub)
    previous = {
        key: before[key]
        for key in after
        if not key.startswith("_") and before.get(key) != after[key]
    }
    previous = render(previous)
    if previous:
        ctx.emit(event, sub, previous=previous, created=now)


def new_item(
    ctx: Ctx,
    sub: dict[str, Any],
    price: dict[str, Any],
    quantity: int | None,
    now: int,
    metadata: Any = None,
    tax_rates: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Store a new item of `price` on `sub` for its current period."""
    item = ctx.build(
        "subscription_item",
        "si",
        created=now,
        price=public_price(price),
        subscription=sub["id"],
        tax_rates=tax_rates or [],
        plan=plan_of(price),
        current_period_start=sub["_period"][0],
        current_period_end=sub["_period"][1],
    )
    set_quantity(item, price, quantity)
    update_metadata(item, metadata)
    ctx.account.add(item)
    sub["_item_ids"].append(item["id"])
    return item


def set_quantity(item: dict[str, Any], price: dict[str, Any], quantity: int | None) -> None:
    """Give a licensed item its quantity; a metered one has none (Stripe leaves the key out)."""
    if is_metered(price):
        item.pop("quantity", None)
    elif quantity is not None:
        item["quantity"] = int(quantity)


def set_period(ctx: Ctx, sub: dict[str, Any], start: int, end: int) -> None:
    """Start a new current period on the subscription and every item."""
    sub["_period"] = [start, end]
    for item in items_of(ctx.account, sub):
        item["current_period_start"] = start
        item["current_period_end"] = end


def apply_item_changes(
    ctx: Ctx, sub: dict[str, Any], changes: list[dict[str, Any]], now: int
) -> None:
    """Apply parsed item changes (no prorations): deletions, new prices or quantities, new items."""
    for change in changes:
        item = ctx.account.find(change.get("id"))
        if change.get("deleted") and item is not None:
            sub["_item_ids"].remove(item["id"])
            ctx.account.delete(item)
        elif item is not None:
            price = ctx.account.get(change.get("price") or item["price"]["id"], "price")
            item["price"] = public_price(price)
            item["plan"] = plan_of(price)
            set_quantity(item, price, change.get("quantity"))
        elif change.get("price"):
            price = ctx.account.get(change["price"], "price")
            new_item(ctx, sub, price, int(change.get("quantity") or 1), now)
    items_of(ctx.account, sub)


def quantity_param(raw: dict[str, Any], param: str, default: int = 1) -> int:
    """Return an item's `quantity` parameter, which may not be negative."""
    quantity = as_int(raw, "quantity", default, param=param)
    assert quantity is not None
    if quantity < 0:
        raise StripeError(
            "Invalid integer: quantity must be non-negative",
            code="parameter_invalid_integer",
            param=param,
        )
    return quantity
