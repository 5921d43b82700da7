"""The billing engine: subscriptions, invoices, prorations, renewals, dunning and trials.

Routes in `resources/subscriptions.py`, `invoices.py`, `coupons.py` and `test_clocks.py` are thin;
the behaviour lives here so Checkout and the Portal (`create_subscription`,
`update_subscription`, `cancel_subscription`, `retry_open_invoices`) share it.

Time: `time_hook` is registered in `sim.time_hooks`; test clocks and `sim.advance()` call it with
a target time and it runs everything due, strictly in time order, with the clock set to each
moment so events and payments carry the time they happened at. Documented choices:
- a renewal (or trial-end) invoice is a draft for `finalize_delay_seconds` (Stripe: one hour),
  then finalized and charged;
- `invoice.upcoming` is sent `upcoming_days` (7) before a renewal;
- `customer.subscription.trial_will_end` is sent `trial_will_end_days` (3) before a trial ends;
- failed payments are retried `retry_days` (3, 5, 7) days after the previous attempt (Stripe's
  classic retry schedule: 4 attempts over about two weeks), then the subscription becomes
  `subscription_status_after_final_attempt` (canceled by default, as at Stripe);
- an `incomplete` subscription expires after 23 hours.
Amounts are integers in minor units; exact (Decimal) amounts are rounded half-up per line.
"""

from __future__ import annotations

import calendar
import secrets
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripesim.currency import ZERO_DECIMAL
from stripesim.errors import StripeError, parameter_missing, resource_missing
from stripesim.lists import as_bool, as_int, render, update_metadata
from stripesim.registry import Ctx
from stripesim.state import Account, BillingSettings, Simulator, new_id, snapshot

DAY = 86400
LIVE_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused", "incomplete")
TIMES = "\N{MULTIPLICATION SIGN}"  # Stripe's line descriptions read "3 <times> Seat"
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


# -- context, settings, time ---------------------------------------------------------------------


def settings(sim: Simulator) -> BillingSettings:
    """The simulator's billing settings (retry schedule, final status, delays)."""
    found = getattr(sim, "billing", None)
    return found if isinstance(found, BillingSettings) else BillingSettings()


def engine_ctx(sim: Simulator, account: Account) -> Ctx:
    """A context for work Stripe does on its own (no request: events carry `request.id` null)."""
    return Ctx(sim, account, None, None, sim.base_url)  # type: ignore[arg-type]


def add_interval(ts: int, interval: str, count: int) -> int:
    """`ts` moved by `count` intervals; months keep the day of month, clamped to the month's end."""
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(ts, UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def next_boundary(anchor: int, interval: str, count: int, after: int) -> int:
    """The first billing boundary `anchor + k intervals` strictly later than `after`."""
    if anchor > after:
        # A future anchor: step back to the last boundary at or before `after`, then forward.
        k = 0
        while add_interval(anchor, interval, -count * (k + 1)) > after:
            k += 1
        return add_interval(anchor, interval, -count * k)
    k = 1
    # Jump close first so long-running daily subscriptions stay cheap.
    if interval in ("day", "week"):
        step = (DAY if interval == "day" else 7 * DAY) * count
        k = max(1, (after - anchor) // step)
    while add_interval(anchor, interval, count * k) <= after:
        k += 1
    return add_interval(anchor, interval, count * k)


def fmt_date(ts: int) -> str:
    """Stripe's proration wording date: `16 May 2018`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y")


def fmt_money(amount: Decimal, currency: str) -> str:
    """A unit price as Stripe writes it in line descriptions: `$29.00`, `¥1,000`, `$0.005`."""
    currency = currency.lower()
    symbol = _SYMBOLS.get(currency, currency.upper() + " ")
    major = amount if currency in ZERO_DECIMAL else amount / 100
    text = (
        f"{major:,.2f}" if major == major.quantize(Decimal("0.01")) else f"{major.normalize():,f}"
    )
    if currency in ZERO_DECIMAL and major == major.to_integral_value():
        text = f"{int(major):,}"
    return f"{symbol}{text}"


def round_minor(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def prorate(amount: int | Decimal, remaining: int, total: int) -> int:
    """`amount` for `remaining` of `total` seconds, rounded to the minor unit."""
    if total <= 0:
        return 0
    return round_minor(Decimal(amount) * Decimal(remaining) / Decimal(total))


# -- prices --------------------------------------------------------------------------------------


def _price(ctx: Ctx, price_id: Any, param: str) -> dict[str, Any]:
    if not price_id:
        raise parameter_missing(param)
    return ctx.account.get(price_id, "price", param=param)


def _item_price(ctx: Ctx, raw: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """The price an item names: `price`, or an inline `price_data` (stored as a new price)."""
    if raw.get("price_data"):
        from stripesim.resources.prices import build_price

        data = dict(raw["price_data"])
        return build_price(ctx, data, param_prefix=f"{prefix}[price_data]")
    if raw.get("price") or raw.get("plan"):
        return _price(ctx, raw.get("price") or raw.get("plan"), f"{prefix}[price]")
    return None


def public_price(price: dict[str, Any]) -> dict[str, Any]:
    """The price as embedded in items and lines (without the engine-only `tiers`)."""
    return render({key: value for key, value in price.items() if key != "tiers"})


def product_name(ctx: Ctx, price: dict[str, Any]) -> str:
    product = ctx.account.find(price.get("product"))
    if product is not None and product.get("name"):
        return str(product["name"])
    return str(price.get("nickname") or price.get("product") or price["id"])


def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    """The legacy `plan` view of a recurring price, as Stripe still embeds it in items."""
    recurring = price.get("recurring") or {}
    return {
        "active": price.get("active", True),
        "amount": price.get("unit_amount"),
        "amount_decimal": price.get("unit_amount_decimal"),
        "billing_scheme": price.get("billing_scheme", "per_unit"),
        "created": price.get("created"),
        "currency": price.get("currency"),
        "id": price["id"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count", 1),
        "livemode": False,
        "metadata": dict(price.get("metadata") or {}),
        "meter": recurring.get("meter"),
        "nickname": price.get("nickname"),
        "object": "plan",
        "product": price.get("product"),
        "tiers_mode": price.get("tiers_mode"),
        "transform_usage": price.get("transform_quantity"),
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type", "licensed"),
    }


def exact_amount(price: dict[str, Any], quantity: int | Decimal) -> Decimal:
    """The exact amount of `quantity` units of `price` (tiers, transform_quantity, decimals)."""
    from stripesim.resources.prices import price_amount

    return price_amount(price, quantity)


def is_metered(price: dict[str, Any]) -> bool:
    return ((price.get("recurring") or {}).get("usage_type")) == "metered"


def _unit_text(price: dict[str, Any]) -> str:
    if price.get("billing_scheme") == "tiered":
        return "tiered"
    unit = Decimal(price.get("unit_amount_decimal") or 0)
    interval = (price.get("recurring") or {}).get("interval")
    count = (price.get("recurring") or {}).get("interval_count") or 1
    per = (
        ""
        if not interval
        else (f" / {interval}" if count == 1 else f" / every {count} {interval}s")
    )
    return f"at {fmt_money(unit, price['currency'])}{per}"


def _qty_text(quantity: int | Decimal | None) -> str:
    if quantity is None:
        return "0"
    quantity = Decimal(quantity)
    return (
        str(int(quantity))
        if quantity == quantity.to_integral_value()
        else str(quantity.normalize())
    )


# -- tax rates and discounts ----------------------------------------------------------------------


def tax_rate_objects(ctx: Ctx, ids: Any, param: str) -> list[dict[str, Any]]:
    if ids in (None, ""):
        return []
    if not isinstance(ids, list):
        ids = [ids]
    rates = []
    for index, rate_id in enumerate(ids):
        rate = ctx.account.get(rate_id, "tax_rate", param=f"{param}[{index}]", label="tax rate")
        rates.append(render(rate))
    return rates


def _coupon_valid(coupon: dict[str, Any], now: int) -> bool:
    if (
        coupon.get("max_redemptions") is not None
        and coupon["times_redeemed"] >= coupon["max_redemptions"]
    ):
        return False
    return not (coupon.get("redeem_by") is not None and now > int(coupon["redeem_by"]))


def new_discounts(
    ctx: Ctx,
    raw: Any,
    *,
    customer_id: str,
    now: int,
    subscription_id: str | None = None,
    invoice_id: str | None = None,
    param: str = "discounts",
) -> list[str]:
    """Discount objects for `discounts[i][coupon]` (or existing `discounts[i][discount]`) params."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise StripeError("Invalid array", param=param)
    ids = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise StripeError("Invalid hash", param=f"{param}[{index}]")
        if entry.get("discount"):
            ctx.account.get(entry["discount"], "discount", param=f"{param}[{index}][discount]")
            ids.append(entry["discount"])
            continue
        if entry.get("promotion_code"):
            raise StripeError(
                "stripesim does not simulate promotion codes; pass `coupon`.",
                param=f"{param}[{index}][promotion_code]",
            )
        coupon_id = entry.get("coupon")
        if not coupon_id:
            raise parameter_missing(f"{param}[{index}][coupon]")
        coupon = ctx.account.get(coupon_id, "coupon", param=f"{param}[{index}][coupon]")
        if not _coupon_valid(coupon, now):
            raise StripeError(f"Coupon expired: {coupon_id}", param=f"{param}[{index}][coupon]")
        end = None
        if coupon["duration"] == "repeating":
            end = add_interval(now, "month", int(coupon.get("duration_in_months") or 1))
        discount = ctx.build(
            "discount",
            "di",
            checkout_session=None,
            customer=customer_id,
            end=end,
            invoice=invoice_id,
            invoice_item=None,
            promotion_code=None,
            start=now,
            subscription=subscription_id,
            subscription_item=None,
            source={"coupon": coupon["id"], "type": "coupon"},
            customer_account=None,
            _coupon=coupon["id"],
        )
        discount.pop("created", None)
        discount.pop("livemode", None)
        discount.pop("metadata", None)
        ctx.account.add(discount)
        coupon["times_redeemed"] += 1
        coupon["valid"] = _coupon_valid(coupon, now)
        ids.append(discount["id"])
    return ids


def _active_discounts(
    ctx: Ctx, ids: list[str], at: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    found = []
    for discount_id in ids or []:
        discount = ctx.account.find(discount_id)
        if discount is None or discount.get("_consumed"):
            continue
        if discount.get("end") is not None and at >= int(discount["end"]):
            continue
        coupon = ctx.account.find(discount["source"]["coupon"])
        if coupon is not None:
            found.append((discount, coupon))
    return found


# -- invoices: building and totals ----------------------------------------------------------------


def _customer(ctx: Ctx, customer_id: Any, param: str = "customer") -> dict[str, Any]:
    if not customer_id:
        raise parameter_missing(param)
    return ctx.account.get(customer_id, "customer", param=param)


def new_invoice(
    ctx: Ctx,
    customer: dict[str, Any],
    *,
    now: int,
    currency: str,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    subscription: dict[str, Any] | None = None,
    auto_advance: bool = False,
    period: tuple[int, int] | None = None,
    default_tax_rates: list[dict[str, Any]] | None = None,
    discounts: list[str] | None = None,
    description: str | None = None,
    default_payment_method: str | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """A draft invoice (stored unless `store=False`, as for previews); no events."""
    invoice_id = new_id("in")
    automatic = bool(subscription and subscription["automatic_tax"]["enabled"])
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription.get("metadata") or {}),
                "subscription": subscription["id"],
            },
            "type": "subscription_details",
        }
    invoice = ctx.build(
        "invoice",
        "in",
        id=invoice_id,
        created=now,
        account_country="US",
        account_name="stripesim",
        account_tax_ids=None,
        amount_due=0,
        amount_paid=0,
        amount_remaining=0,
        amount_shipping=0,
        application=None,
        attempt_count=0,
        attempted=False,
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
        custom_fields=None,
        customer=customer["id"],
        customer_address=customer.get("address"),
        customer_email=customer.get("email"),
        customer_name=customer.get("name"),
        customer_phone=customer.get("phone"),
        customer_shipping=customer.get("shipping"),
        customer_tax_exempt=customer.get("tax_exempt") or "none",
        customer_tax_ids=[],
        default_payment_method=default_payment_method,
        default_source=None,
        default_tax_rates=default_tax_rates or [],
        description=description,
        discounts=list(discounts or []),
        due_date=None,
        effective_at=None,
        ending_balance=None,
        footer=None,
        from_invoice=None,
        hosted_invoice_url=None,
        invoice_pdf=None,
        issuer={"type": "self"},
        last_finalization_error=None,
        latest_revision=None,
        lines={
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        next_payment_attempt=None,
        number=None,
        on_behalf_of=None,
        payment_settings={
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        period_end=period[1] if period else now,
        period_start=period[0] if period else now,
        post_payment_credit_notes_amount=0,
        pre_payment_credit_notes_amount=0,
        receipt_number=None,
        rendering=None,
        shipping_cost=None,
        shipping_details=None,
        starting_balance=0,
        statement_descriptor=None,
        status="draft",
        status_transitions={
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        subscription=subscription["id"] if subscription else None,
        subtotal=0,
        subtotal_excluding_tax=0,
        test_clock=customer.get("test_clock"),
        total=0,
        total_discount_amounts=[],
        total_excluding_tax=0,
        webhooks_delivered_at=now,
        automatically_finalizes_at=None,
        total_pretax_credit_amounts=[],
        total_taxes=[],
        amount_overpaid=0,
        parent=parent,
        customer_account=None,
        _finalize_at=None,
        _payment_intents=[],
        _overdue=False,
    )
    if store:
        ctx.account.add(invoice)
    return invoice


def _line(
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
    if item_id is not None:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": invoice_item["id"] if invoice_item else None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": item_id,
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": invoice_item["id"] if invoice_item else None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    if unit_amount_decimal is None and price is not None:
        unit_amount_decimal = price.get("unit_amount_decimal")
    line = {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": discountable,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": {},
        "period": {"end": period[1], "start": period[0]},
        "quantity": None if quantity is None else int(Decimal(quantity)),
        "subscription": subscription_id,
        "pretax_credit_amounts": [],
        "taxes": [],
        "parent": parent,
        "pricing": {
            "price_details": {"price": price["id"], "product": price.get("product")}
            if price
            else None,
            "type": "price_details",
            "unit_amount_decimal": unit_amount_decimal,
        },
        "subtotal": amount,
        "quantity_decimal": None if quantity is None else _qty_text(quantity),
        "_tax_rates": [rate["id"] for rate in (tax_rates or [])],
    }
    invoice["lines"]["data"].append(line)
    invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
    return line


def _rate_of(ctx: Ctx, rate_id: str) -> dict[str, Any] | None:
    return ctx.account.find(rate_id)


def compute_totals(ctx: Ctx, invoice: dict[str, Any]) -> None:
    """Recompute discounts, taxes and every total of `invoice` from its lines."""
    lines = invoice["lines"]["data"]
    discounts = _active_discounts(ctx, invoice.get("discounts") or [], invoice["created"])
    for line in lines:
        line["discount_amounts"] = []
        line["taxes"] = []
    totals_by_discount: dict[str, int] = {}
    positive = [line for line in lines if line["discountable"] and line["amount"] > 0]
    base = sum(line["amount"] for line in positive)
    for discount, coupon in discounts:
        if coupon.get("percent_off") is not None:
            percent = Decimal(str(coupon["percent_off"]))
            shares = {
                line["id"]: round_minor(Decimal(line["amount"]) * percent / 100)
                for line in positive
            }
        elif coupon.get("amount_off") is not None and coupon.get("currency") == invoice["currency"]:
            off = min(int(coupon["amount_off"]), base)
            shares = {}
            left = off
            for index, line in enumerate(positive):
                share = (
                    left
                    if index == len(positive) - 1
                    else (off * line["amount"] // base if base else 0)
                )
                shares[line["id"]] = share
                left -= share
        else:
            continue
        for line in positive:
            already = sum(entry["amount"] for entry in line["discount_amounts"])
            share = min(shares.get(line["id"], 0), line["amount"] - already)
            line["discount_amounts"].append({"amount": share, "discount": discount["id"]})
            totals_by_discount[discount["id"]] = totals_by_discount.get(discount["id"], 0) + share
    default_rates = [rate["id"] for rate in invoice.get("default_tax_rates") or []]
    tax_totals: dict[str, dict[str, Any]] = {}
    exclusive = inclusive = 0
    for line in lines:
        taxable = line["amount"] - sum(entry["amount"] for entry in line["discount_amounts"])
        for rate_id in line.get("_tax_rates") or default_rates:
            rate = _rate_of(ctx, rate_id)
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
    subtotal = sum(line["amount"] for line in lines)
    discount_total = sum(totals_by_discount.values())
    invoice["subtotal"] = subtotal
    invoice["subtotal_excluding_tax"] = subtotal - inclusive
    invoice["total_discount_amounts"] = [
        {"amount": amount, "discount": discount_id}
        for discount_id, amount in totals_by_discount.items()
    ]
    invoice["total_taxes"] = list(tax_totals.values())
    invoice["total"] = subtotal - discount_total + exclusive
    invoice["total_excluding_tax"] = subtotal - discount_total - inclusive
    applied = invoice["total"] + (invoice.get("starting_balance") or 0)
    invoice["amount_due"] = max(applied, 0)
    invoice["amount_remaining"] = max(invoice["amount_due"] - invoice["amount_paid"], 0)


def pending_items(
    ctx: Ctx, customer_id: str, subscription_id: str | None, *, any_subscription: bool = False
) -> list[dict[str, Any]]:
    """The customer's pending invoice items for an invoice of `subscription_id` (None: one-off)."""
    found = []
    for item in ctx.account.all("invoiceitem"):
        if item["customer"] != customer_id or item.get("invoice") is not None:
            continue
        owner = item.get("_subscription")
        ended = owner is not None and (ctx.account.find(owner) or {}).get("status") in (
            "canceled",
            "incomplete_expired",
        )
        if owner is None or owner == subscription_id or any_subscription or ended:
            found.append(item)
    return found


def add_invoice_item_line(ctx: Ctx, invoice: dict[str, Any], item: dict[str, Any]) -> None:
    """Put pending invoice item `item` on `invoice` as a line."""
    details = (item.get("pricing") or {}).get("price_details")
    price = ctx.account.find(details["price"]) if details else None
    if invoice.get("id") and ctx.account.find(invoice["id"]) is invoice:
        item["invoice"] = invoice["id"]
    _line(
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
            unit_amount_decimal = _qty_text(Decimal(amount) / Decimal(quantity))
    item = ctx.build(
        "invoiceitem",
        "ii",
        amount=amount,
        currency=currency,
        customer=customer_id,
        date=now,
        description=description,
        discountable=discountable and not proration,
        discounts=[],
        invoice=None,
        period={"end": period[1], "start": period[0]},
        proration=proration,
        quantity=int(Decimal(quantity)),
        tax_rates=tax_rates or [],
        test_clock=customer.get("test_clock"),
        parent=parent,
        pricing={
            "price_details": {"price": price["id"], "product": price.get("product")}
            if price
            else None,
            "type": "price_details",
            "unit_amount_decimal": unit_amount_decimal,
        },
        net_amount=amount,
        customer_account=None,
        quantity_decimal=_qty_text(quantity),
        _subscription=subscription_id,
        _subscription_item=item_id,
    )
    item.pop("created", None)
    update_metadata(item, metadata)
    ctx.account.add(item)
    if emit:
        ctx.emit("invoiceitem.created", item, created=now)
    return item


# -- invoices: lifecycle ---------------------------------------------------------------------------


def _number(ctx: Ctx, invoice: dict[str, Any]) -> str:
    customer = ctx.account.find(invoice["customer"]) or {}
    sequence = int(customer.get("next_invoice_sequence") or 1)
    customer["next_invoice_sequence"] = sequence + 1
    prefix = customer.get("invoice_prefix") or "SIM"
    return f"{prefix}-{sequence:04d}"


def finalize(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    """Draft → open (number, URLs, balance applied); a zero amount due is paid at once."""
    if invoice["status"] != "draft":
        raise StripeError(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    customer = ctx.account.find(invoice["customer"]) or {}
    compute_totals(ctx, invoice)
    balance = int(customer.get("balance") or 0)
    invoice["starting_balance"] = balance
    applied = invoice["total"] + balance
    invoice["amount_due"] = max(applied, 0)
    invoice["ending_balance"] = min(applied, 0)
    invoice["amount_remaining"] = invoice["amount_due"] - invoice["amount_paid"]
    if balance != invoice["ending_balance"] and customer:
        customer["balance"] = invoice["ending_balance"]
    invoice["status"] = "open"
    invoice["number"] = _number(ctx, invoice)
    invoice["effective_at"] = now
    invoice["status_transitions"]["finalized_at"] = now
    invoice["hosted_invoice_url"] = f"{ctx.base_url}/i/{invoice['id']}"
    invoice["invoice_pdf"] = f"{ctx.base_url}/i/{invoice['id']}/pdf"
    invoice["_finalize_at"] = None
    invoice["automatically_finalizes_at"] = None
    if invoice["collection_method"] == "send_invoice":
        days = invoice.pop("_days_until_due", None)
        if invoice.get("due_date") is None:
            invoice["due_date"] = now + DAY * int(days if days is not None else 30)
    # Once-only coupons are spent by the first invoice they discount.
    for discount, coupon in _active_discounts(ctx, invoice.get("discounts") or [], now):
        if coupon["duration"] == "once":
            discount["_consumed"] = True
            discount["end"] = now
            sub = ctx.account.find(discount.get("subscription"))
            if sub is not None and discount["id"] in sub.get("discounts", []):
                sub["discounts"].remove(discount["id"])
    for line in invoice["lines"]["data"]:
        item = ctx.account.find(
            (
                line["parent"].get("invoice_item_details")
                or line["parent"].get("subscription_item_details")
                or {}
            ).get("invoice_item")
        )
        if item is not None:
            item["invoice"] = invoice["id"]
    ctx.emit("invoice.finalized", invoice, created=now)
    if invoice["collection_method"] == "send_invoice" and invoice["amount_due"] > 0:
        ctx.emit("invoice.sent", invoice, created=now)
    if invoice["amount_due"] == 0:
        mark_paid(ctx, invoice, now, None)


def mark_paid(
    ctx: Ctx,
    invoice: dict[str, Any],
    now: int,
    payment_intent: dict[str, Any] | None,
    *,
    out_of_band: bool = False,
) -> None:
    """Open → paid; the subscription (if it was waiting on this invoice) becomes active."""
    invoice["status"] = "paid"
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["paid_at"] = now
    if invoice["amount_due"] > 0 and not out_of_band:
        invoice["attempted"] = True
    if payment_intent is not None:
        invoice["_payment_intents"].append(payment_intent["id"])
    ctx.emit("invoice.paid", invoice, created=now)
    if not out_of_band:
        ctx.emit("invoice.payment_succeeded", invoice, created=now)
    sub = ctx.account.find(invoice.get("subscription"))
    # Paying the last open invoice settles the subscription; an older one alone does not.
    if (
        sub is not None
        and sub["status"] in ("incomplete", "past_due", "unpaid")
        and (sub["status"] == "incomplete" or not _open_invoices_of(ctx, sub))
    ):
        before = snapshot(sub)
        sub["status"] = "active"
        emit_updated(ctx, sub, before, now)
    pending = invoice.pop("_pending_update", None)
    if sub is not None and pending:
        before = snapshot(sub)
        waited = sub.get("pending_update") is not None
        _apply_item_changes(ctx, sub, pending, now)
        sub["pending_update"] = None
        if waited:
            ctx.emit("customer.subscription.pending_update_applied", sub, created=now)
        emit_updated(ctx, sub, before, now)


def _application_fee(sub: dict[str, Any] | None, amount: int) -> int | None:
    """The platform's cut of a connected account's invoice (`application_fee_percent`)."""
    if sub is None or sub.get("application_fee_percent") is None:
        return None
    return round_minor(Decimal(amount) * Decimal(str(sub["application_fee_percent"])) / 100)


def _open_invoices_of(ctx: Ctx, sub: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        inv
        for inv in ctx.account.all("invoice")
        if inv.get("subscription") == sub["id"] and inv["status"] == "open"
    ]


def attempt_payment(
    ctx: Ctx,
    invoice: dict[str, Any],
    now: int,
    *,
    payment_method: str | None = None,
    off_session: bool = True,
    outcome: Any = None,
    automatic: bool = True,
) -> Any:
    """Charge an open invoice once; record the attempt and its events. Returns the outcome."""
    from stripesim.payments import collect_payment, resolve_payment_method

    sub = ctx.account.find(invoice.get("subscription"))
    if outcome is None:
        pm = resolve_payment_method(
            ctx,
            invoice["customer"],
            explicit=payment_method or invoice.get("default_payment_method"),
            subscription=sub,
        )
        fee = _application_fee(sub, invoice["amount_due"])
        reason = invoice["billing_reason"]
        outcome = collect_payment(
            ctx,
            customer_id=invoice["customer"],
            amount=invoice["amount_remaining"],
            currency=invoice["currency"],
            payment_method_id=pm,
            description={
                "subscription_create": "Subscription creation",
                "subscription_cycle": "Subscription cycle",
                "subscription_update": "Subscription update",
            }.get(reason, f"Invoice {invoice['number']}"),
            invoice_id=invoice["id"],
            off_session=off_session,
            application_fee_amount=fee,
        )
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if (
        outcome.payment_intent is not None
        and outcome.payment_intent["id"] not in invoice["_payment_intents"]
    ):
        invoice["_payment_intents"].append(outcome.payment_intent["id"])
    if outcome.status == "succeeded":
        mark_paid(ctx, invoice, now, None)
        return outcome
    first = invoice["billing_reason"] == "subscription_create"
    retries = settings(ctx.sim).retry_days
    # Only the automatic attempts walk the retry schedule; a manual retry leaves it as it was.
    if automatic:
        invoice["_auto_attempts"] = int(invoice.get("_auto_attempts") or 0) + 1
        scheduled = invoice["_auto_attempts"]
        if (
            not first
            and invoice["collection_method"] == "charge_automatically"
            and scheduled <= len(retries)
        ):
            invoice["next_payment_attempt"] = now + DAY * int(retries[scheduled - 1])
        else:
            invoice["next_payment_attempt"] = None
    elif first:
        invoice["next_payment_attempt"] = None
    if outcome.status == "requires_action":
        if not first:
            ctx.emit("invoice.payment_failed", invoice, created=now)
        ctx.emit("invoice.payment_action_required", invoice, created=now)
    else:
        ctx.emit("invoice.payment_failed", invoice, created=now)
    if sub is not None and not first and sub["status"] in ("active", "trialing"):
        before = snapshot(sub)
        sub["status"] = "past_due"
        emit_updated(ctx, sub, before, now)
    if (
        sub is not None
        and not first
        and automatic
        and invoice["next_payment_attempt"] is None
        and invoice["collection_method"] == "charge_automatically"
    ):
        _after_final_attempt(ctx, invoice, sub, now)
    return outcome


def _after_final_attempt(ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], now: int) -> None:
    """Dunning is over: the subscription and invoice end as the settings say."""
    config = settings(ctx.sim)
    if sub["status"] in ("canceled", "incomplete_expired"):
        return
    if config.invoice_status_after_final_attempt == "uncollectible":
        mark_uncollectible(ctx, invoice, now)
    final = config.subscription_status_after_final_attempt
    if final == "canceled":
        cancel_subscription(ctx, sub["id"], reason="payment_failed", now=now)
    elif final == "unpaid" and sub["status"] != "unpaid":
        before = snapshot(sub)
        sub["status"] = "unpaid"
        emit_updated(ctx, sub, before, now)


def void_invoice(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    if invoice["status"] not in ("open", "uncollectible"):
        raise StripeError(
            "You can only pass in open or uncollectible invoices.", code="invoice_not_open"
        )
    invoice["status"] = "void"
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["amount_remaining"] = 0
    invoice["status_transitions"]["voided_at"] = now
    ctx.emit("invoice.voided", invoice, created=now)


def mark_uncollectible(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    if invoice["status"] != "open":
        raise StripeError(
            "You can only mark open invoices as uncollectible.", code="invoice_not_open"
        )
    invoice["status"] = "uncollectible"
    invoice["auto_advance"] = False
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["marked_uncollectible_at"] = now
    ctx.emit("invoice.marked_uncollectible", invoice, created=now)


def retry_open_invoices(ctx: Ctx, customer_id: str) -> None:
    """Try the customer's open, automatically-charged invoices now (after a card update)."""
    now = ctx.now_for_customer(customer_id)
    for invoice in list(ctx.account.all("invoice")):
        if (
            invoice["customer"] == customer_id
            and invoice["status"] == "open"
            and invoice["collection_method"] == "charge_automatically"
        ):
            attempt_payment(ctx, invoice, now, automatic=False)


# -- subscriptions: items and shapes ---------------------------------------------------------------


def items_of(account: Account, sub: dict[str, Any]) -> list[dict[str, Any]]:
    """The subscription's live items (stored objects), re-linked into `sub.items.data`."""
    found = [account.objects[item_id] for item_id in sub["_item_ids"] if item_id in account.objects]
    for item in found:
        price = account.find(item["price"]["id"])
        if price is not None:
            item["price"] = public_price(price)
            item["plan"] = plan_of(price)
    sub["items"]["data"] = found
    sub["items"]["total_count"] = len(found)
    return found


def _interval(price: dict[str, Any]) -> tuple[str, int]:
    recurring = price.get("recurring") or {}
    return recurring.get("interval", "month"), int(recurring.get("interval_count") or 1)


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


def _new_item(
    ctx: Ctx,
    sub: dict[str, Any],
    price: dict[str, Any],
    quantity: int | None,
    now: int,
    metadata: Any = None,
    tax_rates: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    item = ctx.build(
        "subscription_item",
        "si",
        created=now,
        discounts=[],
        price=public_price(price),
        quantity=None if is_metered(price) else quantity,
        subscription=sub["id"],
        tax_rates=tax_rates or [],
        plan=plan_of(price),
        current_period_start=sub["_period"][0],
        current_period_end=sub["_period"][1],
        billing_thresholds=None,
    )
    update_metadata(item, metadata)
    ctx.account.add(item)
    sub["_item_ids"].append(item["id"])
    return item


def _set_period(ctx: Ctx, sub: dict[str, Any], start: int, end: int) -> None:
    sub["_period"] = [start, end]
    for item in items_of(ctx.account, sub):
        item["current_period_start"] = start
        item["current_period_end"] = end


def _quantity(raw: dict[str, Any], param: str, default: int = 1) -> int:
    quantity = as_int(raw, "quantity", default, param=param)
    assert quantity is not None
    if quantity < 0:
        raise StripeError(
            "Invalid integer: quantity must be non-negative",
            code="parameter_invalid_integer",
            param=param,
        )
    return quantity


def _trial_end(params: dict[str, Any], now: int, prices: list[dict[str, Any]]) -> int | None:
    raw = params.get("trial_end")
    if raw not in (None, ""):
        if raw == "now":
            return None
        value = as_int(params, "trial_end")
        assert value is not None
        if value <= now:
            raise StripeError(
                "Invalid timestamp: must be an integer Unix timestamp in the future.",
                param="trial_end",
            )
        return value
    days = as_int(params, "trial_period_days")
    if days is None and as_bool(params, "trial_from_plan", False):
        days = next(
            (
                (p.get("recurring") or {}).get("trial_period_days")
                for p in prices
                if (p.get("recurring") or {}).get("trial_period_days")
            ),
            None,
        )
    if days:
        if days < 0 or days > 730:
            raise StripeError(
                "Invalid trial_period_days: must be between 0 and 730", param="trial_period_days"
            )
        return now + int(days) * DAY
    return None


# -- subscriptions: first invoice and line building -----------------------------------------------


def _licensed_lines(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any],
    period: tuple[int, int],
    *,
    trial: bool = False,
    partial_of: int | None = None,
) -> None:
    """Lines for every licensed item for `period` (0 in a trial; prorated when partial)."""
    for item in items_of(ctx.account, sub):
        price = ctx.account.find(item["price"]["id"]) or item["price"]
        if is_metered(price):
            continue
        name = product_name(ctx, price)
        quantity = item.get("quantity") or 0
        if trial:
            amount, description = 0, f"Trial period for {name}"
        else:
            amount = round_minor(exact_amount(price, quantity))
            description = f"{_qty_text(quantity)} {TIMES} {name} ({_unit_text(price)})"
            if partial_of:
                amount = prorate(exact_amount(price, quantity), period[1] - period[0], partial_of)
                description = (
                    f"Remaining time on {_qty_text(quantity)} {TIMES} {name} "
                    f"after {fmt_date(period[0])}"
                )
        _line(
            invoice,
            amount=amount,
            description=description,
            period=period,
            quantity=quantity,
            price=price,
            subscription_id=sub["id"],
            item_id=item["id"],
            tax_rates=item.get("tax_rates") or [],
        )


def _metered_lines(
    ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], period: tuple[int, int]
) -> None:
    """Usage lines for every metered item over `period` (from meter events)."""
    from stripesim.metering import usage_total

    for item in items_of(ctx.account, sub):
        price = ctx.account.find(item["price"]["id"]) or item["price"]
        if not is_metered(price):
            continue
        meter = (price.get("recurring") or {}).get("meter")
        usage = (
            usage_total(ctx.account, meter, sub["customer"], period[0], period[1])
            if meter
            else Decimal(0)
        )
        amount = round_minor(exact_amount(price, usage))
        name = product_name(ctx, price)
        _line(
            invoice,
            amount=amount,
            description=f"{_qty_text(usage)} {TIMES} {name} ({_unit_text(price)})",
            period=period,
            quantity=usage,
            price=price,
            subscription_id=sub["id"],
            item_id=item["id"],
            tax_rates=item.get("tax_rates") or [],
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
    """A draft invoice for the subscription: licensed lines, usage lines, pending items."""
    customer = ctx.account.get(sub["customer"], "customer")
    period_lines = [p for p in (licensed, usage) if p]
    period = (
        (min(p[0] for p in period_lines), max(p[1] for p in period_lines))
        if period_lines
        else (now, now)
    )
    if reason == "subscription_cycle" and usage:
        # Stripe's renewal invoice covers the period just ended.
        period = usage
    elif reason == "subscription_cycle" and licensed:
        period = (sub["_period"][0] if not usage else usage[0], licensed[0])
    invoice = new_invoice(
        ctx,
        customer,
        now=now,
        currency=sub["currency"],
        billing_reason=reason,
        collection_method=sub["collection_method"],
        subscription=sub,
        period=period,
        default_tax_rates=sub.get("default_tax_rates") or [],
        discounts=list(sub.get("discounts") or []),
        default_payment_method=None,
        store=store,
        auto_advance=True,
    )
    invoice["_days_until_due"] = sub.get("days_until_due")
    if include_pending:
        for item in pending_items(ctx, sub["customer"], sub["id"]):
            add_invoice_item_line(ctx, invoice, item)
    if usage:
        _metered_lines(ctx, invoice, sub, usage)
    if licensed:
        _licensed_lines(ctx, invoice, sub, licensed, trial=trial, partial_of=partial_of)
    compute_totals(ctx, invoice)
    return invoice


def _finalize_and_collect(
    ctx: Ctx,
    invoice: dict[str, Any],
    sub: dict[str, Any],
    now: int,
    *,
    outcome: Any = None,
    pay: bool = True,
) -> Any:
    """Finalize a subscription invoice now and charge it (or just send it)."""
    invoice["auto_advance"] = True
    finalize(ctx, invoice, now)
    if not pay or invoice["status"] != "open":
        return None
    if invoice["collection_method"] != "charge_automatically":
        return None
    return attempt_payment(
        ctx,
        invoice,
        now,
        outcome=outcome,
        off_session=invoice["billing_reason"] != "subscription_create",
    )


# -- subscriptions: create ------------------------------------------------------------------------


def create_subscription(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Create a subscription (`POST /v1/subscriptions`), invoice it, collect the first payment."""
    from stripesim.payments import collect_payment, resolve_payment_method

    customer = _customer(ctx, params.get("customer"))
    now = ctx.now_for_customer(customer["id"])
    raw_items = params.get("items")
    if not raw_items:
        raise parameter_missing("items")
    if not isinstance(raw_items, list):
        raise StripeError("Invalid array", param="items")
    prices = []
    for index, raw in enumerate(raw_items):
        price = _item_price(ctx, raw, f"items[{index}]")
        assert price is not None
        if price.get("type") != "recurring":
            raise StripeError(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=f"items[{index}][price]",
            )
        if not price.get("active", True):
            raise StripeError(
                "The price specified is inactive. This field only accepts active prices.",
                param=f"items[{index}][price]",
            )
        prices.append(price)
    currency = prices[0]["currency"]
    interval = _interval(prices[0])
    for index, price in enumerate(prices):
        if price["currency"] != currency:
            raise StripeError(
                "Currency and interval fields must match across all plans on this subscription.",
                param=f"items[{index}][price]",
            )
        if _interval(price) != interval:
            raise StripeError(
                f"The price specified is set to `interval={_interval(price)[0]}` but other "
                f"prices on this subscription have `interval={interval[0]}`. "
                "This is not supported in classic billing mode.",
                param=f"items[{index}][price]",
            )
    collection = params.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise StripeError("Invalid collection_method", param="collection_method")
    days_until_due = as_int(params, "days_until_due")
    if collection == "send_invoice" and days_until_due is None:
        raise parameter_missing("days_until_due")
    behavior = params.get("payment_behavior") or "allow_incomplete"
    if behavior not in (
        "allow_incomplete",
        "default_incomplete",
        "error_if_incomplete",
        "pending_if_incomplete",
    ):
        raise StripeError("Invalid payment_behavior", param="payment_behavior")
    if behavior == "pending_if_incomplete":
        raise StripeError(
            "`payment_behavior=pending_if_incomplete` is only supported when updating a "
            "subscription.",
            param="payment_behavior",
        )
    default_pm = params.get("default_payment_method") or None
    if default_pm:
        from stripesim.payments import payment_method_for

        default_pm = str(payment_method_for(ctx, default_pm, param="default_payment_method")["id"])
    trial_end = _trial_end(params, now, prices)
    anchor_param = as_int(params, "billing_cycle_anchor")
    if anchor_param is not None and anchor_param < now:
        raise StripeError(
            "Invalid billing_cycle_anchor: must be in the future.", param="billing_cycle_anchor"
        )
    fee_percent = params.get("application_fee_percent")
    if fee_percent not in (None, ""):
        if ctx.account.id == ctx.sim.platform.id and not params.get("transfer_data"):
            raise StripeError(
                "Can only apply an application_fee_percent when the request is made on behalf "
                "of another account.",
                param="application_fee_percent",
            )
        fee_percent = float(fee_percent)
    else:
        fee_percent = None
    end_behavior = ((params.get("trial_settings") or {}).get("end_behavior") or {}).get(
        "missing_payment_method"
    ) or "create_invoice"
    if end_behavior not in ("cancel", "pause", "create_invoice"):
        raise StripeError(
            "Invalid trial_settings[end_behavior][missing_payment_method]",
            param="trial_settings[end_behavior][missing_payment_method]",
        )
    automatic_tax = as_bool(params.get("automatic_tax") or {}, "enabled", False)
    default_rates = tax_rate_objects(ctx, params.get("default_tax_rates"), "default_tax_rates")
    interval_name, interval_count = interval
    if trial_end is not None:
        anchor = anchor_param or trial_end
        period = (now, trial_end)
        status = "trialing"
    else:
        anchor = anchor_param or now
        period = (now, next_boundary(anchor, interval_name, interval_count, now))
        status = "incomplete"
    sub_id = new_id("sub")
    sub = ctx.build(
        "subscription",
        "sub",
        id=sub_id,
        created=now,
        application=None,
        application_fee_percent=fee_percent,
        automatic_tax={
            "enabled": automatic_tax,
            "liability": {"type": "self"} if automatic_tax else None,
            "disabled_reason": None,
        },
        billing_cycle_anchor=anchor,
        billing_cycle_anchor_config=None,
        cancel_at=None,
        canceled_at=None,
        cancellation_details={"comment": None, "feedback": None, "reason": None},
        collection_method=collection,
        currency=currency,
        customer=customer["id"],
        days_until_due=days_until_due if collection == "send_invoice" else None,
        default_payment_method=default_pm,
        default_source=None,
        default_tax_rates=default_rates,
        description=params.get("description") or None,
        discounts=[],
        ended_at=None,
        invoice_settings={
            "account_tax_ids": None,
            "issuer": {"type": "self"},
            "custom_fields": None,
            "description": None,
            "footer": None,
        },
        items={
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        latest_invoice=None,
        next_pending_invoice_item_invoice=None,
        on_behalf_of=params.get("on_behalf_of") or None,
        pause_collection=None,
        payment_settings={
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        pending_invoice_item_interval=None,
        pending_setup_intent=None,
        pending_update=None,
        schedule=None,
        start_date=now,
        status=status,
        test_clock=customer.get("test_clock"),
        transfer_data=None,
        trial_end=trial_end,
        trial_settings={"end_behavior": {"missing_payment_method": end_behavior}},
        trial_start=now if trial_end is not None else None,
        cancel_at_period_end=False,
        billing_thresholds=None,
        billing_mode={"flexible": None, "type": "classic", "updated_at": None},
        customer_account=None,
        managed_payments=None,
        billing_schedules=[],
        _item_ids=[],
        _period=list(period),
        _interval=[interval_name, interval_count],
        _trial_will_end_sent=False,
        _upcoming_for=None,
    )
    update_metadata(sub, params.get("metadata"))
    transfer = params.get("transfer_data")
    if isinstance(transfer, dict) and transfer.get("destination"):
        percent = transfer.get("amount_percent")
        sub["transfer_data"] = {
            "amount_percent": float(percent) if percent not in (None, "") else None,
            "destination": transfer["destination"],
        }
    created_objects: list[str] = [sub_id]
    ctx.account.add(sub)
    try:
        for index, (raw, price) in enumerate(zip(raw_items, prices, strict=True)):
            rates = tax_rate_objects(ctx, raw.get("tax_rates"), f"items[{index}][tax_rates]")
            item = _new_item(
                ctx,
                sub,
                price,
                _quantity(raw, f"items[{index}][quantity]"),
                now,
                raw.get("metadata"),
                rates,
            )
            created_objects.append(item["id"])
        items_of(ctx.account, sub)
        if params.get("cancel_at_period_end") is not None and as_bool(
            params, "cancel_at_period_end"
        ):
            sub["cancel_at_period_end"] = True
            sub["cancel_at"] = period[1]
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        elif params.get("cancel_at") not in (None, ""):
            sub["cancel_at"] = as_int(params, "cancel_at")
            sub["canceled_at"] = now
        sub["discounts"] = new_discounts(
            ctx,
            params.get("discounts"),
            customer_id=customer["id"],
            now=now,
            subscription_id=sub_id,
        )
        for index, extra in enumerate(params.get("add_invoice_items") or []):
            price = _price(ctx, extra.get("price"), f"add_invoice_items[{index}][price]")
            quantity = _quantity(extra, f"add_invoice_items[{index}][quantity]")
            item = new_invoice_item(
                ctx,
                customer_id=customer["id"],
                amount=round_minor(exact_amount(price, quantity)),
                currency=price["currency"],
                description=product_name(ctx, price),
                now=now,
                period=(now, now),
                price=price,
                quantity=quantity,
                subscription_id=sub_id,
                emit=False,
            )
            created_objects.append(item["id"])
        partial = None
        if trial_end is None and anchor_param is not None and anchor_param > now:
            partial = anchor_param - add_interval(anchor_param, interval_name, -interval_count)
        invoice = subscription_invoice(
            ctx,
            sub,
            now=now,
            reason="subscription_create",
            licensed=period,
            trial=trial_end is not None,
            partial_of=partial,
        )
        created_objects.append(invoice["id"])
        sub["latest_invoice"] = invoice["id"]
        outcome = None
        charge_now = (
            collection == "charge_automatically" and invoice["amount_due"] > 0 and trial_end is None
        )
        if behavior == "error_if_incomplete" and charge_now:
            pm = resolve_payment_method(ctx, customer["id"], subscription=sub)
            outcome = collect_payment(
                ctx,
                customer_id=customer["id"],
                amount=invoice["amount_due"],
                currency=currency,
                payment_method_id=pm,
                description="Subscription creation",
                invoice_id=invoice["id"],
                off_session=False,
                application_fee_amount=_application_fee(sub, invoice["amount_due"]),
            )
            if outcome.status != "succeeded":
                raise outcome.error or StripeError(
                    "Payment failed", status=402, type="card_error", code="card_declined"
                )
    except StripeError:
        for object_id in reversed(created_objects):
            if object_id in ctx.account.objects:
                obj = ctx.account.objects[object_id]
                if obj.get("object") == "invoiceitem" or object_id in ctx.account.order.get(
                    obj["object"], []
                ):
                    ctx.account.remove(object_id)
        raise
    for object_id in created_objects:
        obj = ctx.account.objects[object_id]
        if obj["object"] == "invoiceitem":
            ctx.emit("invoiceitem.created", obj, created=now)
    if sub["status"] == "incomplete" and (collection == "send_invoice" or not charge_now):
        # Nothing to charge now (an invoice sent for payment, or nothing due): active at once.
        sub["status"] = "active"
    ctx.emit("customer.subscription.created", sub, created=now)
    ctx.emit("invoice.created", invoice, created=now)
    if behavior == "default_incomplete" and charge_now:
        finalize(ctx, invoice, now)
    else:
        _finalize_and_collect(ctx, invoice, sub, now, outcome=outcome)
    items_of(ctx.account, sub)
    return sub


# -- subscriptions: update ------------------------------------------------------------------------


def _proration_lines(
    ctx: Ctx,
    sub: dict[str, Any],
    item: dict[str, Any],
    old_price: dict[str, Any] | None,
    old_qty: int,
    new_price: dict[str, Any] | None,
    new_qty: int,
    at: int,
) -> list[tuple[int, str, dict[str, Any], int]]:
    """(amount, description, price, quantity): unused time on the old, remaining on the new."""
    start, end = sub["_period"]
    if at >= end or sub["status"] == "trialing":
        return []
    remaining, total = end - at, end - start
    rows = []
    if old_price is not None and not is_metered(old_price) and old_qty:
        amount = prorate(exact_amount(old_price, old_qty), remaining, total)
        rows.append(
            (
                -amount,
                f"Unused time on {_qty_text(old_qty)} {TIMES} {product_name(ctx, old_price)} "
                f"after {fmt_date(at)}",
                old_price,
                old_qty,
            )
        )
    if new_price is not None and not is_metered(new_price) and new_qty:
        amount = prorate(exact_amount(new_price, new_qty), remaining, total)
        rows.append(
            (
                amount,
                f"Remaining time on {_qty_text(new_qty)} {TIMES} {product_name(ctx, new_price)} "
                f"after {fmt_date(at)}",
                new_price,
                new_qty,
            )
        )
    # A single-unit line reads as Stripe's: "Unused time on Pro after …".
    return [
        (amount, text.replace(f" 1 {TIMES} ", " "), price, qty) for amount, text, price, qty in rows
    ]


def _apply_item_changes(
    ctx: Ctx, sub: dict[str, Any], changes: list[dict[str, Any]], now: int
) -> None:
    """Apply parsed item changes (no prorations): used for pending updates once paid."""
    for change in changes:
        item = ctx.account.find(change.get("id"))
        if change.get("deleted") and item is not None:
            sub["_item_ids"].remove(item["id"])
            item["deleted"] = True
        elif item is not None:
            if change.get("price"):
                price = ctx.account.get(change["price"], "price")
                item["price"] = public_price(price)
                item["plan"] = plan_of(price)
            if change.get("quantity") is not None:
                item["quantity"] = int(change["quantity"])
        elif change.get("price"):
            price = ctx.account.get(change["price"], "price")
            _new_item(ctx, sub, price, int(change.get("quantity") or 1), now)
    items_of(ctx.account, sub)


def _proration_item(
    ctx: Ctx,
    sub: dict[str, Any],
    at: int,
    now: int,
    amount: int,
    description: str,
    price: dict[str, Any],
    quantity: int,
    item_id: str | None,
    tax_rates: Any = None,
) -> dict[str, Any]:
    """A pending proration line on `sub` for the rest of its current period from `at`."""
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


def update_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Update a subscription (`POST /v1/subscriptions/{id}`): items, prorations, cancel, pause."""
    sub = ctx.account.get(subscription_id, "subscription")
    now = ctx.now_for_customer(sub["customer"])
    if sub["status"] in ("canceled", "incomplete_expired"):
        if set(params) - {"metadata", "cancellation_details", "expand"}:
            raise StripeError(
                "A canceled subscription can only update its cancellation_details and metadata.",
                param=next(iter(set(params) - {"metadata", "cancellation_details", "expand"})),
            )
        return _plain_update(ctx, sub, params, now)
    before = snapshot(sub)
    behavior = params.get("proration_behavior") or "create_prorations"
    if behavior not in ("create_prorations", "none", "always_invoice"):
        raise StripeError("Invalid proration_behavior", param="proration_behavior")
    payment_behavior = params.get("payment_behavior") or "allow_incomplete"
    at = as_int(params, "proration_date", now)
    assert at is not None
    new_interval = None
    items = items_of(ctx.account, sub)
    prorations: list[tuple[int, str, dict[str, Any], int, dict[str, Any]]] = []
    changes: list[dict[str, Any]] = []
    raw_items = params.get("items") or []
    if not isinstance(raw_items, list):
        raise StripeError("Invalid array", param="items")
    # Validate first so a bad item changes nothing.
    parsed = []
    for index, raw in enumerate(raw_items):
        item = None
        if raw.get("id"):
            item = ctx.account.find(raw["id"])
            if (
                item is None
                or item.get("object") != "subscription_item"
                or item["id"] not in sub["_item_ids"]
            ):
                raise resource_missing("subscription_item", raw["id"], f"items[{index}][id]")
        price = _item_price(ctx, raw, f"items[{index}]")
        if item is None and price is None and not raw.get("deleted"):
            raise parameter_missing(f"items[{index}][price]")
        if price is not None:
            if price["currency"] != sub["currency"]:
                raise StripeError(
                    "Currency and interval fields must match across all plans on this "
                    "subscription.",
                    param=f"items[{index}][price]",
                )
            if _interval(price) != tuple(sub["_interval"]):
                new_interval = _interval(price)
        quantity = as_int(raw, "quantity", param=f"items[{index}][quantity]")
        if quantity is not None and quantity < 0:
            raise StripeError(
                "Invalid integer: quantity must be non-negative", param=f"items[{index}][quantity]"
            )
        parsed.append((index, raw, item, price, quantity))
    if (
        raw_items
        and not any(r.get("deleted") not in (True, "true") for r in raw_items)
        and len([r for r in raw_items if r.get("deleted") in (True, "true")]) >= len(items)
    ):
        raise StripeError("A subscription must have at least one active plan.", param="items")
    reset_anchor = params.get("billing_cycle_anchor") == "now" or new_interval is not None
    for index, raw, item, price, quantity in parsed:
        deleted = raw.get("deleted") in (True, "true")
        if item is not None and deleted:
            old_price = ctx.account.find(item["price"]["id"]) or item["price"]
            prorations += [
                (*row, item)
                for row in _proration_lines(
                    ctx, sub, item, old_price, item.get("quantity") or 0, None, 0, at
                )
            ]
            changes.append({"id": item["id"], "deleted": True})
        elif item is not None:
            old_price = ctx.account.find(item["price"]["id"]) or item["price"]
            new_price = price or old_price
            old_qty = item.get("quantity") or 0
            new_qty = (
                quantity
                if quantity is not None
                else (old_qty if price is None or not is_metered(new_price) else 0)
            )
            if new_price["id"] != old_price["id"] or new_qty != old_qty:
                prorations += [
                    (*row, item)
                    for row in _proration_lines(
                        ctx, sub, item, old_price, old_qty, new_price, new_qty, at
                    )
                ]
                changes.append(
                    {
                        "id": item["id"],
                        "price": new_price["id"],
                        "quantity": None if is_metered(new_price) else new_qty,
                    }
                )
            if raw.get("metadata") is not None:
                update_metadata(item, raw["metadata"])
            if raw.get("tax_rates") is not None:
                item["tax_rates"] = tax_rate_objects(
                    ctx, raw["tax_rates"], f"items[{index}][tax_rates]"
                )
        else:
            assert price is not None
            qty = 1 if quantity is None else quantity
            prorations += [
                (*row, {"id": None})
                for row in _proration_lines(ctx, sub, {}, None, 0, price, qty, at)
            ]
            changes.append(
                {
                    "price": price["id"],
                    "quantity": qty,
                    "metadata": raw.get("metadata"),
                    "_new": True,
                }
            )
    if (
        payment_behavior in ("pending_if_incomplete", "error_if_incomplete")
        and changes
        and behavior == "always_invoice"
        and not reset_anchor
    ):
        return _pending_update(
            ctx,
            sub,
            changes,
            prorations,
            now,
            at,
            before,
            strict=payment_behavior == "error_if_incomplete",
        )
    # A new billing period credits the unused time of every item as it was before the change.
    anchor_credits = []
    if reset_anchor and behavior != "none":
        for item in items:
            price = ctx.account.find(item["price"]["id"]) or item["price"]
            for row in _proration_lines(
                ctx, sub, item, price, item.get("quantity") or 0, None, 0, at
            ):
                anchor_credits.append((*row, item["id"]))
    # Apply item changes.
    new_item_ids: dict[int, str] = {}
    for position, change in enumerate(changes):
        if change.get("_new"):
            price = ctx.account.get(change["price"], "price")
            item = _new_item(ctx, sub, price, change["quantity"], now, change.get("metadata"))
            new_item_ids[position] = item["id"]
        else:
            _apply_item_changes(ctx, sub, [change], now)
    if new_interval is not None:
        sub["_interval"] = list(new_interval)
    # Prorations become pending invoice items on the subscription.
    proration_items = []
    if behavior != "none" and not reset_anchor:
        for amount, description, price, qty, item in prorations:
            item_id = item.get("id")
            if item_id is None:
                item_id = next(
                    (
                        i["id"]
                        for i in items_of(ctx.account, sub)
                        if i["price"]["id"] == price["id"]
                    ),
                    None,
                )
            tax_rates = (
                item.get("tax_rates") if isinstance(item, dict) and item.get("object") else None
            )
            proration_items.append(
                _proration_item(
                    ctx, sub, at, now, amount, description, price, qty, item_id, tax_rates
                )
            )
    # Plain fields.
    _plain_fields(ctx, sub, params, now)
    invoice = None
    if reset_anchor and sub["status"] not in ("trialing",):
        # A new period starts now: credit the unused time and bill the new period at once.
        for amount, description, price, qty, item_id in anchor_credits:
            _proration_item(ctx, sub, at, now, amount, description, price, qty, item_id)
        old_start = sub["_period"][0]
        interval_name, interval_count = sub["_interval"]
        sub["billing_cycle_anchor"] = now
        _set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
        invoice = subscription_invoice(
            ctx,
            sub,
            now=now,
            reason="subscription_update",
            licensed=tuple(sub["_period"]),
            usage=(old_start, now),
        )
    elif behavior == "always_invoice" and proration_items:
        invoice = subscription_invoice(ctx, sub, now=now, reason="subscription_update")
    if invoice is not None:
        sub["latest_invoice"] = invoice["id"]
        ctx.emit("invoice.created", invoice, created=now)
        outcome = _finalize_and_collect(ctx, invoice, sub, now)
        if (
            outcome is not None
            and outcome.status != "succeeded"
            and payment_behavior == "error_if_incomplete"
        ):
            raise outcome.error or StripeError(
                "Payment failed", status=402, type="card_error", code="card_declined"
            )
    emit_updated(ctx, sub, before, now)
    return sub


def _pending_update(
    ctx: Ctx,
    sub: dict[str, Any],
    changes: list[dict[str, Any]],
    prorations: list[Any],
    now: int,
    at: int,
    before: dict[str, Any],
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """Bill an item change first and apply it only once paid (`pending_if_incomplete`).

    With `strict` (`error_if_incomplete`) a failed payment voids the invoice and answers 402.
    """
    from stripesim.payments import collect_payment, resolve_payment_method

    customer = ctx.account.get(sub["customer"], "customer")
    invoice = new_invoice(
        ctx,
        customer,
        now=now,
        currency=sub["currency"],
        billing_reason="subscription_update",
        collection_method=sub["collection_method"],
        subscription=sub,
        period=(at, sub["_period"][1]),
        default_tax_rates=sub.get("default_tax_rates") or [],
        discounts=sub.get("discounts") or [],
        auto_advance=True,
    )
    for item in pending_items(ctx, sub["customer"], sub["id"]):
        add_invoice_item_line(ctx, invoice, item)
    for amount, description, price, qty, item in prorations:
        _line(
            invoice,
            amount=amount,
            description=description,
            period=(at, sub["_period"][1]),
            quantity=qty,
            price=price,
            subscription_id=sub["id"],
            item_id=item.get("id"),
            proration=True,
            tax_rates=item.get("tax_rates") if item.get("object") else None,
        )
    compute_totals(ctx, invoice)
    invoice["_pending_update"] = [
        {k: v for k, v in c.items() if not k.startswith("_")} for c in changes
    ]
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    finalize(ctx, invoice, now)
    if invoice["status"] != "open" or invoice["collection_method"] != "charge_automatically":
        return sub
    pm = resolve_payment_method(ctx, sub["customer"], subscription=sub)
    outcome = collect_payment(
        ctx,
        customer_id=sub["customer"],
        amount=invoice["amount_remaining"],
        currency=invoice["currency"],
        payment_method_id=pm,
        description="Subscription update",
        invoice_id=invoice["id"],
        off_session=False,
    )
    # The subscription keeps its state while the change waits: record the attempt only.
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if outcome.status == "succeeded":
        mark_paid(ctx, invoice, now, outcome.payment_intent)
        return sub
    ctx.emit("invoice.payment_failed", invoice, created=now)
    if strict:
        invoice.pop("_pending_update", None)
        void_invoice(ctx, invoice, now)
        for item in ctx.account.all("invoiceitem"):
            if item.get("invoice") == invoice["id"]:
                item["invoice"] = None  # back to pending, as if never billed
        sub["latest_invoice"] = before.get("latest_invoice")
        raise outcome.error or StripeError(
            "Your card was declined.", status=402, type="card_error", code="card_declined"
        )
    sub["pending_update"] = {
        "billing_cycle_anchor": None,
        "expires_at": now + settings(ctx.sim).incomplete_expiry_seconds,
        "subscription_items": [_pending_item_view(ctx, c) for c in changes],
        "trial_end": None,
        "trial_from_plan": None,
    }
    emit_updated(ctx, sub, before, now)
    return sub


def _pending_item_view(ctx: Ctx, change: dict[str, Any]) -> dict[str, Any]:
    """A waiting item change as Stripe shows it in `pending_update.subscription_items`."""
    item = ctx.account.find(change.get("id")) if change.get("id") else None
    view: dict[str, Any] = (
        render(item) if item is not None else {"id": None, "object": "subscription_item"}
    )
    if change.get("price"):
        price = ctx.account.get(change["price"], "price")
        view["price"] = public_price(price)
        view["plan"] = plan_of(price)
    if change.get("quantity") is not None:
        view["quantity"] = change["quantity"]
    if change.get("deleted"):
        view["deleted"] = True
    return view


def _expire_pending_update(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    before = snapshot(sub)
    invoice = ctx.account.find(sub.get("latest_invoice"))
    if invoice is not None and invoice.get("_pending_update") and invoice["status"] == "open":
        invoice.pop("_pending_update", None)
        void_invoice(ctx, invoice, now)
    sub["pending_update"] = None
    ctx.emit("customer.subscription.pending_update_expired", sub, created=now)
    emit_updated(ctx, sub, before, now)


def _plain_update(
    ctx: Ctx, sub: dict[str, Any], params: dict[str, Any], now: int
) -> dict[str, Any]:
    before = snapshot(sub)
    update_metadata(sub, params.get("metadata"))
    if isinstance(params.get("cancellation_details"), dict):
        for key in ("comment", "feedback"):
            if key in params["cancellation_details"]:
                sub["cancellation_details"][key] = params["cancellation_details"][key] or None
    emit_updated(ctx, sub, before, now)
    return sub


def _plain_fields(ctx: Ctx, sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
    """Fields of an update that need no invoice: metadata, cancellation, trial, pause, payer."""
    update_metadata(sub, params.get("metadata"))
    if "description" in params:
        sub["description"] = params["description"] or None
    if "default_payment_method" in params:
        pm = params["default_payment_method"] or None
        if pm:
            from stripesim.payments import payment_method_for

            pm = str(payment_method_for(ctx, pm, param="default_payment_method")["id"])
        sub["default_payment_method"] = pm
    if "default_tax_rates" in params:
        sub["default_tax_rates"] = tax_rate_objects(
            ctx, params["default_tax_rates"], "default_tax_rates"
        )
    if "collection_method" in params:
        sub["collection_method"] = params["collection_method"]
        if sub["collection_method"] == "charge_automatically":
            sub["days_until_due"] = None
    if "days_until_due" in params:
        sub["days_until_due"] = as_int(params, "days_until_due")
    if params.get("discounts") is not None:
        sub["discounts"] = (
            new_discounts(
                ctx,
                params["discounts"],
                customer_id=sub["customer"],
                now=now,
                subscription_id=sub["id"],
            )
            if params["discounts"] != ""
            else []
        )
    if params.get("application_fee_percent") not in (None,):
        sub["application_fee_percent"] = (
            float(params["application_fee_percent"])
            if params["application_fee_percent"] != ""
            else None
        )
    if isinstance(params.get("automatic_tax"), dict):
        enabled = bool(as_bool(params["automatic_tax"], "enabled", False))
        sub["automatic_tax"] = {
            "enabled": enabled,
            "liability": {"type": "self"} if enabled else None,
            "disabled_reason": None,
        }
    if isinstance(params.get("trial_settings"), dict):
        behavior = (params["trial_settings"].get("end_behavior") or {}).get(
            "missing_payment_method"
        )
        if behavior:
            sub["trial_settings"] = {"end_behavior": {"missing_payment_method": behavior}}
    if isinstance(params.get("cancellation_details"), dict):
        for key in ("comment", "feedback"):
            if key in params["cancellation_details"]:
                sub["cancellation_details"][key] = params["cancellation_details"][key] or None
    if "cancel_at_period_end" in params:
        if as_bool(params, "cancel_at_period_end"):
            sub["cancel_at_period_end"] = True
            sub["cancel_at"] = sub["_period"][1]
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub["cancel_at_period_end"] = False
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
    if "cancel_at" in params and "cancel_at_period_end" not in params:
        value = params["cancel_at"]
        if value in ("", None):
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancel_at_period_end"] = False
        else:
            sub["cancel_at"] = (
                sub["_period"][1]
                if value == "max_period_end" or value == "min_period_end"
                else as_int(params, "cancel_at")
            )
            sub["canceled_at"] = now
            sub["cancel_at_period_end"] = sub["cancel_at"] == sub["_period"][1]
            sub["cancellation_details"]["reason"] = "cancellation_requested"
    if "pause_collection" in params:
        raw = params["pause_collection"]
        if raw in ("", None):
            sub["pause_collection"] = None
        else:
            behavior = raw.get("behavior")
            if behavior not in ("keep_as_draft", "mark_uncollectible", "void"):
                raise StripeError(
                    "Invalid pause_collection[behavior]", param="pause_collection[behavior]"
                )
            sub["pause_collection"] = {
                "behavior": behavior,
                "resumes_at": as_int(raw, "resumes_at", param="pause_collection[resumes_at]"),
            }
    if params.get("trial_end") not in (None, ""):
        if params["trial_end"] == "now":
            if sub["status"] == "trialing":
                _end_trial(ctx, sub, now, ended_early=True)
        else:
            value = as_int(params, "trial_end")
            assert value is not None
            if value <= now:
                raise StripeError(
                    "Invalid timestamp: must be an integer Unix timestamp in the future.",
                    param="trial_end",
                )
            if sub["status"] in ("trialing", "active") and sub["status"] == "trialing":
                sub["trial_end"] = value
                sub["billing_cycle_anchor"] = value
                _set_period(ctx, sub, sub["_period"][0], value)
                sub["_trial_will_end_sent"] = False


# -- subscriptions: cancel, resume -----------------------------------------------------------------


def cancel_subscription(
    ctx: Ctx,
    subscription_id: str,
    *,
    invoice_now: bool = False,
    prorate: bool = False,
    reason: str = "cancellation_requested",
    now: int | None = None,
    comment: str | None = None,
    feedback: str | None = None,
) -> dict[str, Any]:
    """Cancel now: optional proration credit and final invoice; `customer.subscription.deleted`."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise StripeError("This subscription has already been canceled.")
    now = now if now is not None else ctx.now_for_customer(sub["customer"])
    if not (sub.get("cancel_at") is not None and sub["cancel_at"] <= now):
        # Canceling now drops the subscription's pending prorations (Stripe keeps them only when
        # the subscription ends at its period end, billing them then).
        for pending in pending_items(ctx, sub["customer"], sub["id"]):
            if pending.get("_subscription") == sub["id"] and pending.get("proration"):
                pending["deleted"] = True
                ctx.emit("invoiceitem.deleted", pending, created=now)
    if prorate and sub["status"] != "trialing":
        for item in items_of(ctx.account, sub):
            price = ctx.account.find(item["price"]["id"]) or item["price"]
            for amount, description, row_price, qty in _proration_lines(
                ctx, sub, item, price, item.get("quantity") or 0, None, 0, now
            ):
                new_invoice_item(
                    ctx,
                    customer_id=sub["customer"],
                    amount=amount,
                    currency=sub["currency"],
                    description=description,
                    now=now,
                    period=(now, sub["_period"][1]),
                    price=row_price,
                    quantity=qty,
                    subscription_id=sub["id"],
                    item_id=item["id"],
                    proration=True,
                )
    if invoice_now:
        invoice = subscription_invoice(
            ctx, sub, now=now, reason="subscription_update", usage=(sub["_period"][0], now)
        )
        if invoice["lines"]["data"]:
            ctx.emit("invoice.created", invoice, created=now)
            sub["latest_invoice"] = invoice["id"]
            _finalize_and_collect(ctx, invoice, sub, now)
        else:
            ctx.account.remove(invoice["id"])
    final = sub.get("latest_invoice") if invoice_now else None
    for invoice in _open_invoices_of(ctx, sub):
        if invoice["id"] != final:
            # Canceling stops automatic collection of the subscription's finalized invoices.
            invoice["auto_advance"] = False
            invoice["next_payment_attempt"] = None
    sub["status"] = "canceled"
    sub["canceled_at"] = (
        sub["canceled_at"]
        if sub.get("cancel_at") and sub["cancel_at"] <= now and sub["canceled_at"]
        else now
    )
    sub["ended_at"] = now
    sub["cancellation_details"]["reason"] = reason
    if comment is not None:
        sub["cancellation_details"]["comment"] = comment
    if feedback is not None:
        sub["cancellation_details"]["feedback"] = feedback
    ctx.emit("customer.subscription.deleted", sub, created=now)
    return sub


def pause_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Pause now (`POST /v1/subscriptions/{id}/pause`): no invoices until it is resumed."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] not in ("active", "trialing", "past_due", "unpaid"):
        raise StripeError(f"A subscription that is {sub['status']} can't be paused.")
    now = ctx.now_for_customer(sub["customer"])
    before = snapshot(sub)
    sub["status"] = "paused"
    ctx.emit("customer.subscription.paused", sub, created=now)
    emit_updated(ctx, sub, before, now)
    return sub


def resume_subscription(ctx: Ctx, subscription_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Resume a `paused` subscription: a new period starts now and is invoiced at once."""
    sub = ctx.account.get(subscription_id, "subscription")
    if sub["status"] != "paused":
        raise StripeError("Only a paused subscription can be resumed.")
    now = ctx.now_for_customer(sub["customer"])
    before = snapshot(sub)
    interval_name, interval_count = sub["_interval"]
    unchanged = params.get("billing_cycle_anchor") == "unchanged"
    if unchanged:
        end = next_boundary(sub["billing_cycle_anchor"], interval_name, interval_count, now)
        start = add_interval(end, interval_name, -interval_count)
        partial = end - start
        _set_period(ctx, sub, now, end)
    else:
        sub["billing_cycle_anchor"] = now
        partial = None
        _set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
    sub["status"] = "active"
    sub["pause_collection"] = None
    invoice = subscription_invoice(
        ctx,
        sub,
        now=now,
        reason="subscription_update",
        licensed=tuple(sub["_period"]),
        partial_of=partial if params.get("proration_behavior") != "none" else None,
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("customer.subscription.resumed", sub, created=now)
    ctx.emit("invoice.created", invoice, created=now)
    _finalize_and_collect(ctx, invoice, sub, now)
    emit_updated(ctx, sub, before, now)
    return sub


# -- the engine: time-driven work -----------------------------------------------------------------


def _end_trial(ctx: Ctx, sub: dict[str, Any], now: int, *, ended_early: bool = False) -> None:
    """Trial over: start the first paid period (invoice), or cancel/pause without a payer."""
    from stripesim.payments import resolve_payment_method

    before = snapshot(sub)
    behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
    payer = resolve_payment_method(ctx, sub["customer"], subscription=sub)
    if (
        payer is None
        and sub["collection_method"] == "charge_automatically"
        and behavior != "create_invoice"
    ):
        sub["trial_end"] = now if ended_early else sub["trial_end"]
        if behavior == "cancel":
            cancel_subscription(ctx, sub["id"], reason="cancellation_requested", now=now)
            return
        sub["status"] = "paused"
        sub["pause_collection"] = None
        ctx.emit("customer.subscription.paused", sub, created=now)
        emit_updated(ctx, sub, before, now)
        return
    interval_name, interval_count = sub["_interval"]
    sub["trial_end"] = now
    sub["billing_cycle_anchor"] = now
    sub["status"] = "active"
    _set_period(ctx, sub, now, add_interval(now, interval_name, interval_count))
    invoice = subscription_invoice(
        ctx,
        sub,
        now=now,
        reason="subscription_update" if ended_early else "subscription_cycle",
        licensed=tuple(sub["_period"]),
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    if ended_early:
        _finalize_and_collect(ctx, invoice, sub, now)
    else:
        _schedule_finalize(ctx, invoice, sub, now)
    emit_updated(ctx, sub, before, now)


def _schedule_finalize(ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any], now: int) -> None:
    if sub["status"] == "unpaid":
        # Stripe keeps creating invoices for unpaid subscriptions but leaves them as drafts.
        invoice["auto_advance"] = False
        return
    invoice["_finalize_at"] = now + settings(ctx.sim).finalize_delay_seconds
    invoice["automatically_finalizes_at"] = invoice["_finalize_at"]


def _renew(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Period end: start the next period and invoice it (licensed ahead, usage behind)."""
    before = snapshot(sub)
    interval_name, interval_count = sub["_interval"]
    old = tuple(sub["_period"])
    end = next_boundary(sub["billing_cycle_anchor"], interval_name, interval_count, now)
    _set_period(ctx, sub, old[1], end)
    if sub["status"] == "paused":
        emit_updated(ctx, sub, before, now)
        return
    invoice = subscription_invoice(
        ctx, sub, now=now, reason="subscription_cycle", licensed=(old[1], end), usage=old
    )
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice, created=now)
    pause = sub.get("pause_collection")
    if pause:
        invoice["auto_advance"] = False
        if pause["behavior"] in ("mark_uncollectible", "void"):
            finalize(ctx, invoice, now)
            if invoice["status"] == "open":
                (mark_uncollectible if pause["behavior"] == "mark_uncollectible" else void_invoice)(
                    ctx, invoice, now
                )
    else:
        _schedule_finalize(ctx, invoice, sub, now)
    emit_updated(ctx, sub, before, now)


def _auto_finalize(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    invoice["_finalize_at"] = None
    invoice["automatically_finalizes_at"] = None
    finalize(ctx, invoice, now)
    if invoice["status"] == "open" and invoice["collection_method"] == "charge_automatically":
        attempt_payment(ctx, invoice, now)


def _expire_incomplete(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    before = snapshot(sub)
    invoice = ctx.account.find(sub.get("latest_invoice"))
    if invoice is not None and invoice["status"] == "open":
        void_invoice(ctx, invoice, now)
    sub["status"] = "incomplete_expired"
    sub["ended_at"] = now
    emit_updated(ctx, sub, before, now)
    ctx.emit("customer.subscription.deleted", sub, created=now)


def _upcoming(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    sub["_upcoming_for"] = sub["_period"][1]
    preview = preview_invoice(ctx, sub, {}, now)
    ctx.emit("invoice.upcoming", preview, created=now)


def _overdue(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    invoice["_overdue"] = True
    ctx.emit("invoice.overdue", invoice, created=now)
    sub = ctx.account.find(invoice.get("subscription"))
    if sub is not None and sub["status"] == "active":
        before = snapshot(sub)
        sub["status"] = "past_due"
        emit_updated(ctx, sub, before, now)


def _clear_pause(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    before = snapshot(sub)
    sub["pause_collection"] = None
    emit_updated(ctx, sub, before, now)


Due = tuple[int, int, str, Callable[[Ctx, int], None]]


def _act(action: Callable[..., Any], obj: dict[str, Any]) -> Callable[[Ctx, int], None]:
    """`action(ctx, obj, now)` as a scheduled step."""

    def run(ctx: Ctx, now: int) -> None:
        action(ctx, obj, now)

    return run


def _due(ctx: Ctx, clock_id: str | None) -> Iterator[Due]:
    """Everything scheduled for objects on `clock_id`, as (time, priority, id, action)."""
    config = settings(ctx.sim)
    for sub in ctx.account.all("subscription"):
        if sub.get("test_clock") != clock_id or sub["status"] in ("canceled", "incomplete_expired"):
            continue
        sid = sub["id"]
        if sub["status"] == "incomplete":
            yield (
                sub["created"] + config.incomplete_expiry_seconds,
                5,
                sid,
                _act(_expire_incomplete, sub),
            )
            continue
        if sub["status"] == "trialing":
            if not sub["_trial_will_end_sent"]:
                when = max(
                    sub["trial_end"] - config.trial_will_end_days * DAY,
                    sub["trial_start"] or sub["created"],
                )
                yield when, 1, sid, _act(_trial_will_end, sub)
            if sub.get("cancel_at") is not None and sub["cancel_at"] <= sub["trial_end"]:
                yield (
                    sub["cancel_at"],
                    2,
                    sid,
                    _act(_scheduled_cancel, sub),
                )
            else:
                yield sub["trial_end"], 3, sid, _act(_end_trial, sub)
            continue
        waiting = sub.get("pending_update")
        if waiting and waiting.get("expires_at"):
            yield (
                waiting["expires_at"],
                0,
                sid,
                _act(_expire_pending_update, sub),
            )
        pause = sub.get("pause_collection")
        if pause and pause.get("resumes_at"):
            yield pause["resumes_at"], 0, sid, _act(_clear_pause, sub)
        end = sub["_period"][1]
        if sub.get("cancel_at") is not None and sub["cancel_at"] <= end:
            yield (
                sub["cancel_at"],
                2,
                sid,
                _act(_scheduled_cancel, sub),
            )
            continue
        if sub["status"] in ("active", "past_due") and sub.get("_upcoming_for") != end:
            when = end - config.upcoming_days * DAY
            if when > sub["_period"][0]:
                yield when, 1, sid, _act(_upcoming, sub)
        yield end, 3, sid, _act(_renew, sub)
    for invoice in ctx.account.all("invoice"):
        if invoice.get("test_clock") != clock_id:
            continue
        iid = invoice["id"]
        if (
            invoice["status"] == "draft"
            and invoice.get("_finalize_at") is not None
            and invoice["auto_advance"]
        ):
            yield invoice["_finalize_at"], 4, iid, _act(_auto_finalize, invoice)
        elif invoice["status"] == "open":
            if (
                invoice["collection_method"] == "charge_automatically"
                and invoice.get("next_payment_attempt") is not None
                and invoice["auto_advance"]
            ):
                yield (
                    invoice["next_payment_attempt"],
                    4,
                    iid,
                    _act(attempt_payment, invoice),
                )
            elif (
                invoice["collection_method"] == "send_invoice"
                and invoice.get("due_date") is not None
                and not invoice.get("_overdue")
            ):
                yield invoice["due_date"], 4, iid, _act(_overdue, invoice)


def _scheduled_cancel(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """`cancel_at` reached: bill the last period's usage (and pending items), then cancel."""
    if sub["status"] != "trialing":
        metered = any(
            is_metered(ctx.account.find(item["price"]["id"]) or item["price"])
            for item in items_of(ctx.account, sub)
        )
        if metered or pending_items(ctx, sub["customer"], sub["id"]):
            invoice = subscription_invoice(
                ctx, sub, now=now, reason="subscription_cycle", usage=(sub["_period"][0], now)
            )
            sub["latest_invoice"] = invoice["id"]
            ctx.emit("invoice.created", invoice, created=now)
            _schedule_finalize(ctx, invoice, sub, now)
    cancel_subscription(ctx, sub["id"], now=now)


def _trial_will_end(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    sub["_trial_will_end_sent"] = True
    ctx.emit("customer.subscription.trial_will_end", sub, created=now)


@contextmanager
def _time_at(sim: Simulator, account: Account, clock_id: str | None, when: int) -> Iterator[None]:
    """Run with the clock (test clock, or the simulator's own) showing `when`."""
    if clock_id:
        clock = account.find(clock_id)
        if clock is not None and when > int(clock["frozen_time"]):
            clock["frozen_time"] = when
        yield
        return
    saved = sim.offset
    sim.offset = saved - max(0, sim.wall_time() - when)
    try:
        yield
    finally:
        sim.offset = saved


def time_hook(sim: Simulator, account: Account, clock_id: str | None, target: int) -> None:
    """Process everything due up to `target` for objects on `clock_id`, oldest first."""
    ctx = engine_ctx(sim, account)
    for _ in range(100_000):
        due = min(_due(ctx, clock_id), default=None, key=lambda d: (d[0], d[1], d[2]))
        if due is None or due[0] > target:
            return
        when = due[0]
        with _time_at(sim, account, clock_id, when):
            due[3](ctx, max(when, ctx.now(clock_id) if clock_id else when))
    raise RuntimeError("billing engine did not settle")


def shortest_interval_seconds(ctx: Ctx, clock_id: str) -> int | None:
    """The shortest billing interval among the clock's live subscriptions, in seconds (approx.)."""
    lengths = []
    for sub in ctx.account.all("subscription"):
        if sub.get("test_clock") == clock_id and sub["status"] not in (
            "canceled",
            "incomplete_expired",
        ):
            name, count = sub["_interval"]
            lengths.append(
                {"day": DAY, "week": 7 * DAY, "month": 31 * DAY, "year": 366 * DAY}[name] * count
            )
    return min(lengths) if lengths else None


# -- previews -------------------------------------------------------------------------------------


def _add_proration_lines(
    invoice: dict[str, Any], sub: dict[str, Any], prorations: list[Any], at: int, end: int
) -> None:
    """Add previewed proration lines (amount, description, price, qty, item id) to `invoice`."""
    for amount, description, price, qty, item_id in prorations:
        _line(
            invoice,
            amount=amount,
            description=description,
            period=(at, end),
            quantity=qty,
            price=price,
            subscription_id=sub["id"],
            item_id=item_id,
            proration=True,
        )


def preview_invoice(
    ctx: Ctx, sub: dict[str, Any], details: dict[str, Any], now: int
) -> dict[str, Any]:
    """The next invoice of `sub` (not stored), with optional `subscription_details` changes."""
    items_of(ctx.account, sub)
    at = as_int(details, "proration_date", now) or now
    behavior = details.get("proration_behavior") or "create_prorations"
    interval_name, interval_count = sub["_interval"]
    start, end = sub["_period"]
    customer = ctx.account.get(sub["customer"], "customer")
    # Work on a copy so nothing stored changes.
    shadow = snapshot(sub)
    shadow["_item_ids"] = []
    shadow_items = []
    for item in sub["items"]["data"]:
        shadow_items.append(snapshot(item))
    changes = details.get("items") or []
    prorations: list[tuple[int, str, dict[str, Any], int, str | None]] = []
    for index, raw in enumerate(changes):
        target = (
            next((i for i in shadow_items if i["id"] == raw.get("id")), None)
            if raw.get("id")
            else None
        )
        if raw.get("id") and target is None:
            raise resource_missing(
                "subscription_item", raw["id"], f"subscription_details[items][{index}][id]"
            )
        price = (
            _price(ctx, raw["price"], f"subscription_details[items][{index}][price]")
            if raw.get("price")
            else None
        )
        quantity = as_int(raw, "quantity")
        if target is not None and raw.get("deleted") in (True, "true"):
            old = ctx.account.find(target["price"]["id"]) or target["price"]
            prorations += [
                (*r, target["id"])
                for r in _proration_lines(
                    ctx, sub, target, old, target.get("quantity") or 0, None, 0, at
                )
            ]
            shadow_items.remove(target)
        elif target is not None:
            old = ctx.account.find(target["price"]["id"]) or target["price"]
            new = price or old
            new_qty = quantity if quantity is not None else (target.get("quantity") or 0)
            prorations += [
                (*r, target["id"])
                for r in _proration_lines(
                    ctx, sub, target, old, target.get("quantity") or 0, new, new_qty, at
                )
            ]
            target["price"] = public_price(new)
            target["quantity"] = None if is_metered(new) else new_qty
        elif price is not None:
            qty = 1 if quantity is None else quantity
            prorations += [
                (*r, None) for r in _proration_lines(ctx, sub, {}, None, 0, price, qty, at)
            ]
            shadow_items.append(
                {
                    "id": new_id("si"),
                    "price": public_price(price),
                    "quantity": None if is_metered(price) else qty,
                    "tax_rates": [],
                }
            )
    invoice = new_invoice(
        ctx,
        customer,
        now=now,
        currency=sub["currency"],
        billing_reason="upcoming",
        collection_method=sub["collection_method"],
        subscription=sub,
        period=(start, end),
        default_tax_rates=sub.get("default_tax_rates") or [],
        discounts=sub.get("discounts") or [],
        store=False,
    )
    invoice["id"] = None
    if behavior == "always_invoice" and prorations:
        invoice["billing_reason"] = "subscription_update"
        _add_proration_lines(invoice, sub, prorations, at, end)
        invoice["period_start"] = invoice["period_end"] = at
        compute_totals(ctx, invoice)
        return invoice
    for item in pending_items(ctx, sub["customer"], sub["id"]):
        add_invoice_item_line(ctx, invoice, item)
    if behavior != "none":
        _add_proration_lines(invoice, sub, prorations, at, end)
    from stripesim.metering import usage_total

    next_end = add_interval(end, interval_name, interval_count)
    for item in shadow_items:
        price = ctx.account.find(item["price"]["id"]) or item["price"]
        name = product_name(ctx, price)
        if is_metered(price):
            meter = (price.get("recurring") or {}).get("meter")
            usage = (
                usage_total(ctx.account, meter, sub["customer"], start, end)
                if meter
                else Decimal(0)
            )
            _line(
                invoice,
                amount=round_minor(exact_amount(price, usage)),
                description=f"{_qty_text(usage)} {TIMES} {name} ({_unit_text(price)})",
                period=(start, end),
                quantity=usage,
                price=price,
                subscription_id=sub["id"],
                item_id=item["id"],
            )
        else:
            qty = item.get("quantity") or 0
            _line(
                invoice,
                amount=round_minor(exact_amount(price, qty)),
                description=f"{_qty_text(qty)} {TIMES} {name} ({_unit_text(price)})",
                period=(end, next_end),
                quantity=qty,
                price=price,
                subscription_id=sub["id"],
                item_id=item["id"],
                tax_rates=item.get("tax_rates") or [],
            )
    invoice["period_start"], invoice["period_end"] = start, end
    invoice["created"] = end
    compute_totals(ctx, invoice)
    customer_balance = int(customer.get("balance") or 0)
    invoice["starting_balance"] = customer_balance
    applied = invoice["total"] + customer_balance
    invoice["amount_due"] = max(applied, 0)
    invoice["amount_remaining"] = invoice["amount_due"]
    invoice["next_payment_attempt"] = end + settings(ctx.sim).finalize_delay_seconds
    return invoice


def coupon_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


def install(sim: Simulator) -> None:
    """Register the billing engine's time hook on `sim` (once)."""
    if time_hook not in sim.time_hooks:
        sim.time_hooks.append(time_hook)
