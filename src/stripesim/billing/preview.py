"""Previews: a subscription's next invoice (upcoming), optionally with changes it would make."""

from __future__ import annotations

from typing import Any

from stripesim.billing.context import settings
from stripesim.billing.invoices import (
    add_invoice_item_line,
    add_licensed_line,
    add_usage_line,
    compute_totals,
    new_subscription_invoice,
    pending_items,
)
from stripesim.billing.items import items_of
from stripesim.billing.periods import add_interval
from stripesim.billing.prices import current_price, is_metered, price_param, public_price
from stripesim.billing.proration import Proration, add_proration_line, proration_lines
from stripesim.errors import resource_missing
from stripesim.lists import as_int
from stripesim.registry import Ctx
from stripesim.state import new_id, snapshot


def preview_invoice(
    ctx: Ctx, sub: dict[str, Any], details: dict[str, Any], now: int
) -> dict[str, Any]:
    """Build the next invoice of `sub` (not stored), with `subscription_details` changes."""
    items_of(ctx.account, sub)
    at = as_int(details, "proration_date", now) or now
    behavior = details.get("proration_behavior") or "create_prorations"
    start, end = sub["_period"]
    shadow_items, prorations = _changed_items(ctx, sub, details.get("items") or [], at)
    invoice = new_subscription_invoice(
        ctx, sub, now=now, reason="upcoming", period=(start, end), auto_advance=False, store=False
    )
    # A preview is not stored, but Stripe still names it: `upcoming_in_…`.
    invoice["id"] = new_id("upcoming_in")
    if behavior == "always_invoice" and prorations:
        # The change would be invoiced at once: the preview is that invoice.
        invoice["billing_reason"] = "subscription_update"
        for proration, item in prorations:
            add_proration_line(invoice, sub, proration, (at, end), item)
        invoice["period_start"] = invoice["period_end"] = at
        compute_totals(ctx, invoice)
        return invoice
    for pending in pending_items(ctx, sub["customer"], sub["id"]):
        add_invoice_item_line(ctx, invoice, pending)
    if behavior != "none":
        for proration, item in prorations:
            add_proration_line(invoice, sub, proration, (at, end), item)
    _add_next_period_lines(ctx, invoice, sub, shadow_items)
    _finish(ctx, invoice, ctx.account.get(sub["customer"], "customer"), start, end)
    return invoice


def _changed_items(
    ctx: Ctx, sub: dict[str, Any], changes: list[dict[str, Any]], at: int
) -> tuple[list[dict[str, Any]], list[tuple[Proration, dict[str, Any]]]]:
    """Apply `subscription_details[items]` to copies of the items; return them and prorations."""
    shadow_items = [snapshot(item) for item in sub["items"]["data"]]
    prorations: list[tuple[Proration, dict[str, Any]]] = []
    for index, raw in enumerate(changes):
        param = f"subscription_details[items][{index}]"
        target = None
        if raw.get("id"):
            target = next((i for i in shadow_items if i["id"] == raw["id"]), None)
            if target is None:
                raise resource_missing("subscription_item", raw["id"], f"{param}[id]")
        price = price_param(ctx, raw["price"], f"{param}[price]") if raw.get("price") else None
        quantity = as_int(raw, "quantity")
        if target is not None:
            old = current_price(ctx, target)
            old_qty = target.get("quantity") or 0
            if raw.get("deleted") in (True, "true"):
                rows = proration_lines(ctx, sub, old, old_qty, None, 0, at)
                shadow_items.remove(target)
            else:
                new = price or old
                new_qty = quantity if quantity is not None else old_qty
                rows = proration_lines(ctx, sub, old, old_qty, new, new_qty, at)
                target["price"] = public_price(new)
                target["quantity"] = None if is_metered(new) else new_qty
            prorations += [(row, target) for row in rows]
        elif price is not None:
            qty = 1 if quantity is None else quantity
            rows = proration_lines(ctx, sub, None, 0, price, qty, at)
            prorations += [(row, {"id": None}) for row in rows]
            shadow_items.append(
                {
                    "id": new_id("si"),
                    "price": public_price(price),
                    "quantity": None if is_metered(price) else qty,
                    "tax_rates": [],
                }
            )
    return shadow_items, prorations


def _add_next_period_lines(
    ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    """Bill usage of the period ending and licensed items for the next one."""
    interval_name, interval_count = sub["_interval"]
    start, end = sub["_period"]
    next_end = add_interval(end, interval_name, interval_count)
    for item in items:
        price = current_price(ctx, item)
        if is_metered(price):
            add_usage_line(ctx, invoice, sub, item, price, (start, end))
        else:
            add_licensed_line(ctx, invoice, sub, item, price, (end, next_end))


def _finish(
    ctx: Ctx, invoice: dict[str, Any], customer: dict[str, Any], start: int, end: int
) -> None:
    """Date the preview at period end and apply the customer's balance as finalizing would."""
    invoice["period_start"], invoice["period_end"] = start, end
    invoice["created"] = end
    compute_totals(ctx, invoice)
    customer_balance = int(customer.get("balance") or 0)
    invoice["starting_balance"] = customer_balance
    applied = invoice["total"] + customer_balance
    invoice["amount_due"] = max(applied, 0)
    invoice["amount_remaining"] = invoice["amount_due"]
    invoice["next_payment_attempt"] = end + settings(ctx.sim).finalize_delay_seconds
