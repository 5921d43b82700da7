"""Creating a subscription: read the request, store it and its items, invoice and collect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripesim.billing.amounts import round_minor
from stripesim.billing.collection import (
    charge_invoice,
    finalize,
    finalize_and_collect,
    read_payment_settings,
)
from stripesim.billing.discounts import new_discounts, tax_rate_objects
from stripesim.billing.invoices import new_invoice_item, subscription_invoice
from stripesim.billing.items import items_of, new_item, quantity_param
from stripesim.billing.periods import DAY, add_interval, future_time, interval_of, next_boundary
from stripesim.billing.prices import exact_amount, item_price, price_param, product_name
from stripesim.errors import StripeError, card_error, parameter_missing
from stripesim.lists import as_bool, as_int, required_object, update_metadata
from stripesim.payments import payment_method_for
from stripesim.registry import Ctx
from stripesim.state import new_id

_BEHAVIORS = (
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
)


@dataclass
class _Request:
    """What a create request asks for, read and checked before anything is stored."""

    customer: dict[str, Any]
    now: int
    raw_items: list[dict[str, Any]]
    prices: list[dict[str, Any]]
    collection: str
    days_until_due: int | None
    behavior: str
    default_pm: str | None
    trial_end: int | None
    anchor: int | None
    fee_percent: float | None
    end_behavior: str
    automatic_tax: bool
    default_rates: list[dict[str, Any]]

    @property
    def currency(self) -> str:
        return str(self.prices[0]["currency"])

    @property
    def interval(self) -> tuple[str, int]:
        return interval_of(self.prices[0])


def create_subscription(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Create a subscription (`POST /v1/subscriptions`), invoice it, collect the first payment."""
    request = _read(ctx, params)
    now = request.now
    sub = _new_subscription(ctx, params, request)
    created = [sub["id"]]
    ctx.account.add(sub)
    try:
        _add_items(ctx, sub, request, created)
        _set_cancellation(sub, params, now)
        sub["discounts"] = new_discounts(
            ctx,
            params.get("discounts"),
            customer_id=sub["customer"],
            now=now,
            subscription_id=sub["id"],
        )
        _add_invoice_items(ctx, sub, params.get("add_invoice_items") or [], now, created)
        invoice = _first_invoice(ctx, sub, request)
        created.append(invoice["id"])
        sub["latest_invoice"] = invoice["id"]
        charge_now = (
            request.collection == "charge_automatically"
            and invoice["amount_due"] > 0
            and request.trial_end is None
        )
        outcome = None
        if request.behavior == "error_if_incomplete" and charge_now:
            outcome = _charge_or_refuse(ctx, invoice, sub)
    except StripeError:
        _forget(ctx, created)
        raise
    for object_id in created:
        obj = ctx.account.objects[object_id]
        if obj["object"] == "invoiceitem":
            ctx.emit("invoiceitem.created", obj, created=now)
    if sub["status"] == "incomplete" and (request.collection == "send_invoice" or not charge_now):
        # Nothing to charge now (an invoice sent for payment, or nothing due): active at once.
        sub["status"] = "active"
    ctx.emit("customer.subscription.created", sub, created=now)
    ctx.emit("invoice.created", invoice, created=now)
    if request.behavior == "default_incomplete" and charge_now:
        finalize(ctx, invoice, now)
    else:
        finalize_and_collect(ctx, invoice, now, outcome=outcome)
    items_of(ctx.account, sub)
    return sub


# -- reading the request ---------------------------------------------------------------------------


def _read(ctx: Ctx, params: dict[str, Any]) -> _Request:
    """Check the request in Stripe's order; nothing is stored yet."""
    customer = required_object(ctx.account, params, "customer", "customer")
    now = ctx.now_for_customer(customer["id"])
    raw_items, prices = _recurring_prices(ctx, params.get("items"))
    collection = params.get("collection_method") or "charge_automatically"
    if collection not in ("charge_automatically", "send_invoice"):
        raise StripeError("Invalid collection_method", param="collection_method")
    days_until_due = as_int(params, "days_until_due")
    if collection == "send_invoice" and days_until_due is None:
        raise parameter_missing("days_until_due")
    behavior = _payment_behavior(params)
    default_pm = default_payment_method(ctx, params.get("default_payment_method"))
    trial_end = _trial_end(params, now, prices)
    anchor = as_int(params, "billing_cycle_anchor")
    if anchor is not None and anchor < now:
        raise StripeError(
            "Invalid billing_cycle_anchor: must be in the future.", param="billing_cycle_anchor"
        )
    fee_percent = _fee_percent(ctx, params)
    end_behavior = ((params.get("trial_settings") or {}).get("end_behavior") or {}).get(
        "missing_payment_method"
    ) or "create_invoice"
    if end_behavior not in ("cancel", "pause", "create_invoice"):
        raise StripeError(
            "Invalid trial_settings[end_behavior][missing_payment_method]",
            param="trial_settings[end_behavior][missing_payment_method]",
        )
    automatic_tax = bool(as_bool(params.get("automatic_tax") or {}, "enabled", False))
    if automatic_tax and not (customer.get("address") or {}).get("country"):
        # Stripe Tax needs to know where the customer is before it can tax a subscription.
        raise StripeError(
            "The customer's location isn't recognized. Please provide a valid address, or set "
            "`automatic_tax[enabled]` to false.",
            code="customer_tax_location_invalid",
        )
    return _Request(
        customer=customer,
        now=now,
        raw_items=raw_items,
        prices=prices,
        collection=collection,
        days_until_due=days_until_due,
        behavior=behavior,
        default_pm=default_pm,
        trial_end=trial_end,
        anchor=anchor,
        fee_percent=fee_percent,
        end_behavior=end_behavior,
        automatic_tax=automatic_tax,
        default_rates=tax_rate_objects(ctx, params.get("default_tax_rates"), "default_tax_rates"),
    )


def _recurring_prices(
    ctx: Ctx, raw_items: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the items and their prices: active, recurring, one currency, one interval."""
    if not raw_items:
        raise parameter_missing("items")
    if not isinstance(raw_items, list):
        raise StripeError("Invalid array", param="items")
    prices = []
    for index, raw in enumerate(raw_items):
        price = item_price(ctx, raw, f"items[{index}]")
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
    currency, interval = prices[0]["currency"], interval_of(prices[0])
    for index, price in enumerate(prices):
        if price["currency"] != currency:
            raise StripeError(
                "Currency and interval fields must match across all plans on this subscription.",
                param=f"items[{index}][price]",
            )
        if interval_of(price) != interval:
            raise StripeError(
                f"The price specified is set to `interval={interval_of(price)[0]}` but other "
                f"prices on this subscription have `interval={interval[0]}`. "
                "This is not supported in classic billing mode.",
                param=f"items[{index}][price]",
            )
    return raw_items, prices


def _payment_behavior(params: dict[str, Any]) -> str:
    behavior = params.get("payment_behavior") or "allow_incomplete"
    if behavior not in _BEHAVIORS:
        raise StripeError("Invalid payment_behavior", param="payment_behavior")
    if behavior == "pending_if_incomplete":
        raise StripeError(
            "`payment_behavior=pending_if_incomplete` is only supported when updating a "
            "subscription.",
            param="payment_behavior",
        )
    return str(behavior)


def default_payment_method(ctx: Ctx, value: Any) -> str | None:
    """Return the PaymentMethod a parameter names (a magic `pm_card_*` id makes a new one)."""
    if not value:
        return None
    return str(payment_method_for(ctx, value, param="default_payment_method")["id"])


def _trial_end(params: dict[str, Any], now: int, prices: list[dict[str, Any]]) -> int | None:
    """Return when the trial ends: `trial_end`, `trial_period_days`, or the price's trial days."""
    raw = params.get("trial_end")
    if raw not in (None, ""):
        return None if raw == "now" else future_time(params, "trial_end", now)
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


def _fee_percent(ctx: Ctx, params: dict[str, Any]) -> float | None:
    """Return the platform's `application_fee_percent` (only on behalf of another account)."""
    fee_percent = params.get("application_fee_percent")
    if fee_percent in (None, ""):
        return None
    if ctx.account.id == ctx.sim.platform.id and not params.get("transfer_data"):
        raise StripeError(
            "Can only apply an application_fee_percent when the request is made on behalf "
            "of another account.",
            param="application_fee_percent",
        )
    return float(fee_percent)


# -- storing it ------------------------------------------------------------------------------------


def _new_subscription(ctx: Ctx, params: dict[str, Any], request: _Request) -> dict[str, Any]:
    """Build the subscription object (not stored yet) for its first period."""
    now = request.now
    interval_name, interval_count = request.interval
    if request.trial_end is not None:
        anchor = request.anchor or request.trial_end
        period = (now, request.trial_end)
        status = "trialing"
    else:
        anchor = request.anchor or now
        period = (now, next_boundary(anchor, interval_name, interval_count, now))
        status = "incomplete"
    sub_id = new_id("sub")
    automatic_tax = request.automatic_tax
    sub = ctx.build(
        "subscription",
        "sub",
        id=sub_id,
        created=now,
        application_fee_percent=request.fee_percent,
        automatic_tax={
            "enabled": automatic_tax,
            "liability": {"type": "self"} if automatic_tax else None,
            "disabled_reason": None,
        },
        billing_cycle_anchor=anchor,
        collection_method=request.collection,
        currency=request.currency,
        customer=request.customer["id"],
        days_until_due=request.days_until_due if request.collection == "send_invoice" else None,
        default_payment_method=request.default_pm,
        default_tax_rates=request.default_rates,
        description=params.get("description") or None,
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
        on_behalf_of=params.get("on_behalf_of") or None,
        payment_settings=read_payment_settings(
            params,
            {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
        ),
        start_date=now,
        status=status,
        test_clock=request.customer.get("test_clock"),
        trial_end=request.trial_end,
        trial_settings={"end_behavior": {"missing_payment_method": request.end_behavior}},
        trial_start=now if request.trial_end is not None else None,
        billing_mode={"flexible": None, "type": "classic", "updated_at": now},
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
    return sub


def _add_items(ctx: Ctx, sub: dict[str, Any], request: _Request, created: list[str]) -> None:
    for index, (raw, price) in enumerate(zip(request.raw_items, request.prices, strict=True)):
        rates = tax_rate_objects(ctx, raw.get("tax_rates"), f"items[{index}][tax_rates]")
        quantity = quantity_param(raw, f"items[{index}][quantity]")
        item = new_item(ctx, sub, price, quantity, request.now, raw.get("metadata"), rates)
        created.append(item["id"])
    items_of(ctx.account, sub)


def _set_cancellation(sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
    """Schedule the end asked for at creation: `cancel_at_period_end` or `cancel_at`."""
    if params.get("cancel_at_period_end") is not None and as_bool(params, "cancel_at_period_end"):
        sub["cancel_at_period_end"] = True
        sub["cancel_at"] = sub["_period"][1]
        sub["canceled_at"] = now
        sub["cancellation_details"]["reason"] = "cancellation_requested"
    elif params.get("cancel_at") not in (None, ""):
        sub["cancel_at"] = as_int(params, "cancel_at")
        sub["canceled_at"] = now


def _add_invoice_items(
    ctx: Ctx, sub: dict[str, Any], extras: list[dict[str, Any]], now: int, created: list[str]
) -> None:
    """Store `add_invoice_items` as pending items (announced once the request succeeds)."""
    for index, extra in enumerate(extras):
        price = price_param(ctx, extra.get("price"), f"add_invoice_items[{index}][price]")
        quantity = quantity_param(extra, f"add_invoice_items[{index}][quantity]")
        item = new_invoice_item(
            ctx,
            customer_id=sub["customer"],
            amount=round_minor(exact_amount(price, quantity)),
            currency=price["currency"],
            description=product_name(ctx, price),
            now=now,
            period=(now, now),
            price=price,
            quantity=quantity,
            subscription_id=sub["id"],
            emit=False,
        )
        created.append(item["id"])


def _first_invoice(ctx: Ctx, sub: dict[str, Any], request: _Request) -> dict[str, Any]:
    """Build the first invoice: the trial at zero, else the first (perhaps partial) period."""
    partial = None
    anchor = request.anchor
    if request.trial_end is None and anchor is not None and anchor > request.now:
        interval_name, interval_count = request.interval
        partial = anchor - add_interval(anchor, interval_name, -interval_count)
    return subscription_invoice(
        ctx,
        sub,
        now=request.now,
        reason="subscription_create",
        licensed=tuple(sub["_period"]),
        trial=request.trial_end is not None,
        partial_of=partial,
    )


def _charge_or_refuse(ctx: Ctx, invoice: dict[str, Any], sub: dict[str, Any]) -> Any:
    """Charge before creating (`error_if_incomplete`): a failed payment fails the request."""
    outcome = charge_invoice(
        ctx,
        invoice,
        sub,
        off_session=False,
        description="Subscription creation",
    )
    if outcome.status not in ("succeeded", "processing"):
        raise outcome.error or card_error("Payment failed", code="card_declined")
    return outcome


def _forget(ctx: Ctx, created: list[str]) -> None:
    """Undo a create that failed part way: remove what it stored."""
    for object_id in reversed(created):
        if object_id in ctx.account.objects:
            ctx.account.remove(object_id)
