"""Prorations: credit for the unused time of what a subscription had, charge for what it gets."""

from __future__ import annotations

from typing import Any

from stripesim.billing.amounts import TIMES, fmt_date, prorate, qty_text
from stripesim.billing.invoices import item_line, new_invoice_item
from stripesim.billing.prices import exact_amount, is_metered, product_name
from stripesim.registry import Ctx

# (amount, description, price, quantity) of one proration
Proration = tuple[int, str, dict[str, Any], int]


def proration_lines(
    ctx: Ctx,
    sub: dict[str, Any],
    old_price: dict[str, Any] | None,
    old_qty: int,
    new_price: dict[str, Any] | None,
    new_qty: int,
    at: int,
) -> list[Proration]:
    """Return the unused time on the old price and the remaining time on the new one, from `at`."""
    start, end = sub["_period"]
    if at >= end or sub["status"] == "trialing":
        return []
    rows = []
    if old_price is not None and not is_metered(old_price) and old_qty:
        amount = _remaining(old_price, old_qty, at, start, end)
        rows.append((-amount, "Unused time on", old_price, old_qty))
    if new_price is not None and not is_metered(new_price) and new_qty:
        amount = _remaining(new_price, new_qty, at, start, end)
        rows.append((amount, "Remaining time on", new_price, new_qty))
    return [
        (amount, _describe(ctx, lead, price, qty, at), price, qty)
        for amount, lead, price, qty in rows
    ]


def _remaining(price: dict[str, Any], quantity: int, at: int, start: int, end: int) -> int:
    return prorate(exact_amount(price, quantity), end - at, end - start)


def _describe(ctx: Ctx, lead: str, price: dict[str, Any], quantity: int, at: int) -> str:
    # A single-unit line reads as Stripe's: "Unused time on Pro after …".
    units = "" if quantity == 1 else f"{qty_text(quantity)} {TIMES} "
    return f"{lead} {units}{product_name(ctx, price)} after {fmt_date(at)}"


def proration_item(
    ctx: Ctx,
    sub: dict[str, Any],
    at: int,
    now: int,
    proration: Proration,
    item_id: str | None,
    tax_rates: Any = None,
) -> dict[str, Any]:
    """Store a pending proration item on `sub` for the rest of its current period from `at`."""
    amount, description, price, quantity = proration
    return new_invoice_item(
        ctx,
        customer_id=sub["customer"],
        amount=amount,
        currency=sub["currency"],
        description=description,
        now=now,
        period=(at, sub["_period"][1]),
        price=price,
        quantity=quantity,
        subscription_id=sub["id"],
        item_id=item_id,
        proration=True,
        tax_rates=tax_rates,
    )


def add_proration_line(
    invoice: dict[str, Any],
    sub: dict[str, Any],
    proration: Proration,
    period: tuple[int, int],
    item: dict[str, Any],
) -> None:
    """Put a proration straight on an invoice (previews, and changes billed before applying)."""
    amount, description, price, quantity = proration
    item_line(invoice, sub, item, price, period, amount, description, quantity, proration=True)
