"""Invoices as the billing engine builds them: drafts, lines, totals and invoice items."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import objects
from stripesim.billing.amounts import TIMES, fmt_date, line_text, prorate, qty_text, round_minor
from stripesim.billing.discounts import active_discounts, coupon_amount_off
from stripesim.billing.items import items_of
from stripesim.billing.prices import current_price, exact_amount, is_metered, product_name
from stripesim.catalog import inline_price
from stripesim.lists import update_metadata
from stripesim.metering import usage_total
from stripesim.payment_settings import method_types_of
from stripesim.registry import Ctx
from stripesim.state import new_id, snapshot
from stripesim.tax import automatic_rates

_ENDED = ("canceled", "incomplete_expired")


def pricing_of(price: dict[str, Any] | None, unit_amount_decimal: str | None) -> dict[str, Any]:
    """Return the `pricing` hash of a line or invoice item (`price_details` only with a price)."""
    pricing: dict[str, Any] = {"type": "price_details", "unit_amount_decimal": unit_amount_decimal}
    if price is not None:
        pricing["price_details"] = {"price": price["id"], "product": price.get("product")}
    return pricing


def new_invoice(
    ctx: Ctx,
    customer: dict[str, Any],
    *,
    now: int,
    currency: str,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    subscription: dict[str, Any] | None = None,
    auto_advance: bool = False,
    period: tuple[int, int] | None = None,
    default_tax_rates: list[dict[str, Any]] | None = None,
    discounts: list[str] | None = None,
    description: str | None = None,
    default_payment_method: str | None = None,
    store: bool = True,
    automatic_tax: bool = False,
) -> dict[str, Any]:
    """Build a draft invoice (stored unless `store=False`, as for previews); no events.

    Automatic tax follows the subscription's setting, else `automatic_tax` (a one-off invoice).
    """
    invoice_id = new_id("in")
    automatic = bool(subscription["automatic_tax"]["enabled"]) if subscription else automatic_tax
    invoice = ctx.build(
        "invoice",
        "in",
        id=invoice_id,
        created=now,
        account_country="US",
        account_name="stripesim",
        auto_advance=auto_advance,
        automatic_tax={
            "enabled": automatic,
            "liability": {"type": "self"} if automatic else None,
            "status": "complete" if automatic else None,
            "disabled_reason": None,
            "provider": "stripe" if automatic else None,
        },
        billing_reason=billing_reason,
        collection_method=collection_method,
        currency=currency,
        customer=customer["id"],
        customer_address=customer.get("address"),
        customer_email=customer.get("email"),
        customer_name=customer.get("name"),
        customer_phone=customer.get("phone"),
        customer_shipping=customer.get("shipping"),
        customer_tax_exempt=customer.get("tax_exempt") or "none",
        customer_tax_ids=[
            {"type": tax_id["type"], "value": tax_id["value"]}
            for tax_id in ctx.account.where("tax_id", customer=customer["id"])
        ],
        default_payment_method=default_payment_method,
        default_tax_rates=default_tax_rates or [],
        description=description,
        discounts=list(discounts or []),
        lines={
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        payment_settings={
            "default_mandate": None,
            "payment_method_options": snapshot(
                (subscription or {}).get("payment_settings", {}).get("payment_method_options")
            ),
            "payment_method_types": method_types_of({}, subscription),
        },
        period_end=period[1] if period else now,
        period_start=period[0] if period else now,
        status_transitions={
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        test_clock=customer.get("test_clock"),
        webhooks_delivered_at=now,
        parent=_invoice_parent(subscription),
        # Stripe names an invoice's subscription under `parent` only (since 2025-03-31.basil).
        _subscription=subscription["id"] if subscription else None,
        _finalize_at=None,
        _payment_intents=[],
        _overdue=False,
    )
    if store:
        ctx.account.add(invoice)
    return invoice


def _invoice_parent(subscription: dict[str, Any] | None) -> dict[str, Any] | None:
    if subscription is None:
        return None
    return {
        "quote_details": None,
        "subscription_details": {
            "metadata": dict(subscription.get("metadata") or {}),
            "subscription": subscription["id"],
        },
        "type": "subscription_details",
    }


def _line_parent(
    *,
    item_id: str | None,
    invoice_item: dict[str, Any] | None,
    proration: bool,
    subscription_id: str | None,
) -> dict[str, Any]:
    """Return a line's `parent`: the subscription item it bills, else the invoice item."""
    details: dict[str, Any] = {
        "invoice_item": invoice_item["id"] if invoice_item else None,
        "proration": proration,
        "proration_details": {"credited_items": None},
        "subscription": subscription_id,
    }
    if item_id is not None:
        return {
            "invoice_item_details": None,
            "subscription_item_details": {**details, "subscription_item": item_id},
            "type": "subscription_item_details",
        }
    return {
        "invoice_item_details": details,
        "subscription_item_details": None,
        "type": "invoice_item_details",
    }


def line_invoice_item(line: dict[str, Any]) -> str | None:
    """Return the id of the invoice item a line comes from, if any."""
    parent = line["parent"]
    details = parent.get("invoice_item_details") or parent.get("subscription_item_details") or {}
    return details.get("invoice_item")


def add_line(
    invoice: dict[str, Any],
    *,
    amount: int,
    description: str,
    period: tuple[int, int],
    quantity: int | Decimal | None,
    price: dict[str, Any] | None,
    subscription_id: str | None,
    item_id: str | None = None,
    invoice_item: dict[str, Any] | None = None,
    proration: bool = False,
    tax_rates: list[dict[str, Any]] | None = None,
    discountable: bool = True,
    unit_amount_decimal: str | None = None,
) -> dict[str, Any]:
    """Append a line to `invoice` (totals are left to `compute_totals`)."""
    if unit_amount_decimal is None and price is not None:
        unit_amount_decimal = price.get("unit_amount_decimal")
    line = objects.new("line_item")
    line.update(
        id=new_id("il"),
        amount=amount,
        currency=invoice["currency"],
        description=description,
        discountable=discountable,
        invoice=invoice["id"],
        period={"end": period[1], "start": period[0]},
        quantity=None if quantity is None else int(Decimal(quantity)),
        subscription=subscription_id,
        parent=_line_parent(
            item_id=item_id,
            invoice_item=invoice_item,
            proration=proration,
            subscription_id=subscription_id,
        ),
        pricing=pricing_of(price, unit_amount_decimal),
        subtotal=amount,
        quantity_decimal=None if quantity is None else qty_text(quantity),
        _tax_rates=[rate["id"] for rate in (tax_rates or [])],
    )
    invoice["lines"]["data"].append(line)
    invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
    return line


# -- totals ----------------------------------------------------------------------------------------


def compute_totals(ctx: Ctx, invoice: dict[str, Any]) -> None:
    """Recompute discounts, taxes and every total of `invoice` from its lines."""
    lines = invoice["lines"]["data"]
    for line in lines:
        line["discount_amounts"] = []
        line["taxes"] = []
    discounted = _apply_discounts(ctx, invoice, lines)
    tax_totals, exclusive, inclusive = _apply_taxes(ctx, invoice, lines)
    subtotal = sum(line["amount"] for line in lines)
    discount_total = sum(discounted.values())
    invoice["subtotal"] = subtotal
    invoice["subtotal_excluding_tax"] = subtotal - inclusive
    invoice["total_discount_amounts"] = [
        {"amount": amount, "discount": discount_id} for discount_id, amount in discounted.items()
    ]
    invoice["total_taxes"] = tax_totals
    invoice["total"] = subtotal - discount_total + exclusive
    invoice["total_excluding_tax"] = subtotal - discount_total - inclusive
    applied = invoice["total"] + (invoice.get("starting_balance") or 0)
    invoice["amount_due"] = max(applied, 0)
    invoice["amount_remaining"] = max(invoice["amount_due"] - invoice["amount_paid"], 0)


def _apply_discounts(
    ctx: Ctx, invoice: dict[str, Any], lines: list[dict[str, Any]]
) -> dict[str, int]:
    """Share each discount over the discountable lines; return the amount of each discount."""
    totals: dict[str, int] = {}
    positive = [line for line in lines if line["discountable"] and line["amount"] > 0]
    for discount, coupon in active_discounts(
        ctx, invoice.get("discounts") or [], invoice["created"]
    ):
        products = (coupon.get("_applies_to") or {}).get("products")
        eligible = [line for line in positive if not products or _product_of(line) in products]
        shares = _discount_shares(coupon, invoice["currency"], eligible)
        if shares is None:
            continue
        for line in eligible:
            already = sum(entry["amount"] for entry in line["discount_amounts"])
            share = min(shares.get(line["id"], 0), line["amount"] - already)
            line["discount_amounts"].append({"amount": share, "discount": discount["id"]})
            totals[discount["id"]] = totals.get(discount["id"], 0) + share
    return totals


def _product_of(line: dict[str, Any]) -> str | None:
    return ((line.get("pricing") or {}).get("price_details") or {}).get("product")


def _discount_shares(
    coupon: dict[str, Any], currency: str, positive: list[dict[str, Any]]
) -> dict[str, int] | None:
    """Return what a coupon takes off each line (by line id); None when it does not apply."""
    if coupon.get("percent_off") is not None:
        percent = Decimal(str(coupon["percent_off"]))
        return {
            line["id"]: round_minor(Decimal(line["amount"]) * percent / 100) for line in positive
        }
    amount_off = coupon_amount_off(coupon, currency)
    if amount_off is None:
        return None
    # An amount off is spread over the lines in proportion; the last line takes the rounding.
    base = sum(line["amount"] for line in positive)
    off = min(amount_off, base)
    shares = {}
    left = off
    for index, line in enumerate(positive):
        share = (
            left if index == len(positive) - 1 else (off * line["amount"] // base if base else 0)
        )
        shares[line["id"]] = share
        left -= share
    return shares


def _apply_taxes(
    ctx: Ctx, invoice: dict[str, Any], lines: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int, int]:
    """Tax each line at its rates (else the invoice's); return per-rate totals and the sums."""
    default_rates = [rate["id"] for rate in invoice.get("default_tax_rates") or []]
    default_rates = default_rates or automatic_rates(ctx, invoice)
    tax_totals: dict[str, dict[str, Any]] = {}
    exclusive = inclusive = 0
    for line in lines:
        taxable = line["amount"] - sum(entry["amount"] for entry in line["discount_amounts"])
        for rate_id in line.get("_tax_rates") or default_rates:
            rate = ctx.account.find(rate_id)
            if rate is None:
                continue
            percent = Decimal(str(rate["percentage"]))
            if rate.get("inclusive"):
                tax = round_minor(Decimal(taxable) * percent / (100 + percent))
                inclusive += tax
                behavior, taxable_amount = "inclusive", taxable - tax
            else:
                tax = round_minor(Decimal(taxable) * percent / 100)
                exclusive += tax
                behavior, taxable_amount = "exclusive", taxable
            entry = {
                "amount": tax,
                "tax_behavior": behavior,
                "tax_rate_details": {"tax_rate": rate_id},
                "taxability_reason": "standard_rated",
                "taxable_amount": taxable_amount,
                "type": "tax_rate_details",
            }
            line["taxes"].append(entry)
            total = tax_totals.setdefault(rate_id, {**entry, "amount": 0, "taxable_amount": 0})
            total["amount"] += tax
            total["taxable_amount"] += taxable_amount
    return list(tax_totals.values()), exclusive, inclusive


# -- invoice items ---------------------------------------------------------------------------------


def pending_items(
    ctx: Ctx, customer_id: str, subscription_id: str | None, *, any_subscription: bool = False
) -> list[dict[str, Any]]:
    """Return the customer's pending invoice items for an invoice of `subscription_id`."""
    found = []
    for item in ctx.account.where("invoiceitem", customer=customer_id, invoice=None):
        owner = item.get("_subscription")
        # Items of a subscription that ended go on the customer's next invoice.
        ended = owner is not None and (ctx.account.find(owner) or {}).get("status") in _ENDED
        if owner is None or owner == subscription_id or any_subscription or ended:
            found.append(item)
    return found


def add_invoice_item_line(ctx: Ctx, invoice: dict[str, Any], item: dict[str, Any]) -> None:
    """Put pending invoice item `item` on `invoice` as a line."""
    details = (item.get("pricing") or {}).get("price_details")
    price = ctx.account.find(details["price"]) if details else None
    if invoice.get("id") and ctx.account.find(invoice["id"]) is invoice:
        item["invoice"] = invoice["id"]
    add_line(
        invoice,
        amount=item["amount"],
        description=item.get("description") or "",
        quantity=item.get("quantity"),
        period=(item["period"]["start"], item["period"]["end"]),
        price=price,
        subscription_id=item.get("_subscription"),
        item_id=item.get("_subscription_item"),
        invoice_item=item,
        proration=bool(item.get("proration")),
        tax_rates=item.get("tax_rates") or [],
        discountable=bool(item.get("discountable", True)),
        unit_amount_decimal=(item.get("pricing") or {}).get("unit_amount_decimal"),
    )


def new_invoice_item(
    ctx: Ctx,
    *,
    customer_id: str,
    amount: int,
    currency: str,
    description: str,
    now: int,
    period: tuple[int, int],
    price: dict[str, Any] | None = None,
    quantity: int | Decimal = 1,
    subscription_id: str | None = None,
    item_id: str | None = None,
    proration: bool = False,
    tax_rates: list[dict[str, Any]] | None = None,
    discountable: bool = True,
    unit_amount_decimal: str | None = None,
    metadata: Any = None,
    emit: bool = True,
) -> dict[str, Any]:
    """Store a pending invoice item (and emit `invoiceitem.created`)."""
    customer = ctx.account.find(customer_id) or {}
    parent = None
    if subscription_id:
        parent = {
            "subscription_details": {"subscription": subscription_id, "subscription_item": item_id},
            "type": "subscription_details",
        }
    if unit_amount_decimal is None:
        if price is not None:
            unit_amount_decimal = price.get("unit_amount_decimal")
        elif quantity:
            unit_amount_decimal = qty_text(Decimal(amount) / Decimal(quantity))
    if price is None:
        price = inline_price(ctx, currency, unit_amount_decimal or "0", description)
    item = ctx.build(
        "invoiceitem",
        "ii",
        amount=amount,
        currency=currency,
        customer=customer_id,
        date=now,
        description=description,
        discountable=discountable and not proration,
        period={"end": period[1], "start": period[0]},
        proration=proration,
        quantity=int(Decimal(quantity)),
        tax_rates=tax_rates or [],
        test_clock=customer.get("test_clock"),
        parent=parent,
        pricing=pricing_of(price, unit_amount_decimal),
        net_amount=amount,
        quantity_decimal=qty_text(quantity),
        _subscription=subscription_id,
        _subscription_item=item_id,
    )
    item.pop("created", None)
    update_metadata(item, metadata)
    ctx.account.add(item)
    if emit:
        ctx.emit("invoiceitem.created", item, created=now)
    return item


# -- a subscription's invoice ----------------------------------------------------------------------


def item_line(
    invoice: dict[str, Any],
    sub: dict[str, Any],
    item: dict[str, Any],
    price: dict[str, Any],
    period: tuple[int, int],
    amount: int,
    description: str,
    quantity: int | Decimal,
    *,
    proration: bool = False,
) -> None:
    """Put a line for a subscription item (or a new item's id, or None) on `invoice`."""
    add_line(
        invoice,
        amount=amount,
        description=description,
        period=period,
        quantity=quantity,
        price=price,
        subscription_id=sub["id"],
        item_id=item.get("id"),
        proration=proration,
        tax_rates=item.get("tax_rates") or [],
    )


def add_licensed_line(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any],
    item: dict[str, Any],
    price: dict[str, Any],
    period: tuple[int, int],
    *,
    trial: bool = False,
    partial_of: int | None = None,
) -> None:
    """Bill a licensed item for `period` (nothing in a trial; prorated over `partial_of` s)."""
    name = product_name(ctx, price)
    quantity = item.get("quantity") or 0
    if trial:
        amount, description = 0, f"Trial period for {name}"
    elif partial_of:
        amount = prorate(exact_amount(price, quantity), period[1] - period[0], partial_of)
        description = (
            f"Remaining time on {qty_text(quantity)} {TIMES} {name} after {fmt_date(period[0])}"
        )
    else:
        amount = round_minor(exact_amount(price, quantity))
        description = line_text(quantity, name, price)
    item_line(invoice, sub, item, price, period, amount, description, quantity)


def add_usage_line(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any],
    item: dict[str, Any],
    price: dict[str, Any],
    period: tuple[int, int],
) -> None:
    """Bill a metered item for the usage its meter counted over `period`."""
    meter = (price.get("recurring") or {}).get("meter")
    usage = (
        usage_total(ctx.account, meter, sub["customer"], period[0], period[1])
        if meter
        else Decimal(0)
    )
    amount = round_minor(exact_amount(price, usage))
    description = line_text(usage, product_name(ctx, price), price)
    item_line(invoice, sub, item, price, period, amount, description, usage)


def new_subscription_invoice(
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    now: int,
    reason: str,
    period: tuple[int, int],
    auto_advance: bool = True,
    store: bool = True,
) -> dict[str, Any]:
    """Build an empty draft of the subscription's (its customer, currency, taxes, discounts)."""
    return new_invoice(
        ctx,
        ctx.account.get(sub["customer"], "customer"),
        now=now,
        currency=sub["currency"],
        billing_reason=reason,
        collection_method=sub["collection_method"],
        subscription=sub,
        period=period,
        default_tax_rates=sub.get("default_tax_rates") or [],
        discounts=list(sub.get("discounts") or []),
        store=store,
        auto_advance=auto_advance,
    )


def subscription_invoice(
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    now: int,
    reason: str,
    licensed: tuple[int, int] | None = None,
    usage: tuple[int, int] | None = None,
    trial: bool = False,
    partial_of: int | None = None,
    include_pending: bool = True,
    store: bool = True,
) -> dict[str, Any]:
    """Build a draft invoice for the subscription: pending items, usage lines, licensed lines."""
    invoice = new_subscription_invoice(
        ctx,
        sub,
        now=now,
        reason=reason,
        period=_invoice_period(sub, now, reason, licensed, usage),
        store=store,
    )
    invoice["_days_until_due"] = sub.get("days_until_due")
    if include_pending:
        for pending in pending_items(ctx, sub["customer"], sub["id"]):
            add_invoice_item_line(ctx, invoice, pending)
    items = items_of(ctx.account, sub)
    if usage:
        for item in items:
            price = current_price(ctx, item)
            if is_metered(price):
                add_usage_line(ctx, invoice, sub, item, price, usage)
    if licensed:
        for item in items:
            price = current_price(ctx, item)
            if not is_metered(price):
                add_licensed_line(
                    ctx, invoice, sub, item, price, licensed, trial=trial, partial_of=partial_of
                )
    compute_totals(ctx, invoice)
    return invoice


def _invoice_period(
    sub: dict[str, Any],
    now: int,
    reason: str,
    licensed: tuple[int, int] | None,
    usage: tuple[int, int] | None,
) -> tuple[int, int]:
    """Return the invoice's period: a renewal's covers the period just ended."""
    if reason == "subscription_cycle" and usage:
        return usage
    if reason == "subscription_cycle" and licensed:
        return (sub["_period"][0], licensed[0])
    spans = [span for span in (licensed, usage) if span]
    if not spans:
        return (now, now)
    return (min(span[0] for span in spans), max(span[1] for span in spans))
