"""Tax rates and discounts as invoices and subscriptions apply them."""

from __future__ import annotations

import secrets
import string
from typing import Any

from stripesim.billing.periods import add_interval
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import render
from stripesim.registry import Ctx


def coupon_id() -> str:
    """Return a new coupon id as Stripe makes them: eight capitals and digits."""
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


def tax_rate_objects(ctx: Ctx, ids: Any, param: str) -> list[dict[str, Any]]:
    """Return the tax rates a parameter names, as embedded in subscriptions and invoices."""
    if ids in (None, ""):
        return []
    if not isinstance(ids, list):
        ids = [ids]
    rates = []
    for index, rate_id in enumerate(ids):
        rate = ctx.account.get(rate_id, "tax_rate", param=f"{param}[{index}]", label="tax rate")
        rates.append(render(rate))
    return rates


def coupon_valid(coupon: dict[str, Any], now: int) -> bool:
    """Tell whether a coupon can still be redeemed (redemptions left, not past `redeem_by`)."""
    if (
        coupon.get("max_redemptions") is not None
        and coupon["times_redeemed"] >= coupon["max_redemptions"]
    ):
        return False
    return not (coupon.get("redeem_by") is not None and now > int(coupon["redeem_by"]))


def coupon_amount_off(coupon: dict[str, Any], currency: str) -> int | None:
    """Return what an amount-off coupon takes off in `currency` (its own, or one of its
    `currency_options`); None for a percent coupon or a currency it has no amount in."""
    if coupon.get("amount_off") is None:
        return None
    if coupon.get("currency") == currency:
        return int(coupon["amount_off"])
    option = (coupon.get("_currency_options") or {}).get(currency)
    return int(option["amount_off"]) if option else None


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
    """Store discounts for `discounts[i][coupon]` (or reuse `discounts[i][discount]`); their ids."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise StripeError("Invalid array", param=param)
    ids = []
    for index, entry in enumerate(raw):
        entry_param = f"{param}[{index}]"
        if not isinstance(entry, dict):
            raise StripeError("Invalid hash", param=entry_param)
        if entry.get("discount"):
            ctx.account.get(entry["discount"], "discount", param=f"{entry_param}[discount]")
            ids.append(entry["discount"])
            continue
        promo = None
        if entry.get("promotion_code"):
            promo = redeemable_promotion_code(
                ctx, entry["promotion_code"], f"{entry_param}[promotion_code]", now, customer_id
            )
            coupon = ctx.account.get(promo["promotion"]["coupon"], "coupon")
        else:
            coupon = _redeemable_coupon(ctx, entry, entry_param, now)
        discount = _new_discount(ctx, coupon, customer_id, now, subscription_id, invoice_id)
        if promo is not None:
            discount["promotion_code"] = promo["id"]
            promo["times_redeemed"] += 1
        ids.append(discount["id"])
    return ids


def redeemable_promotion_code(
    ctx: Ctx,
    promo_id: Any,
    param: str,
    now: int,
    customer_id: str | None,
    *,
    amount: int | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """Return the promotion code `promo_id` if `customer_id` may redeem it now, else refuse."""
    promo = ctx.account.get(promo_id, "promotion_code", param=param, label="promotion code")
    coupon = ctx.account.get(promo["promotion"]["coupon"], "coupon", param=param)
    restrictions = promo["restrictions"]
    problem = None
    if not promo["active"]:
        problem = "This promotion code is inactive."
    elif promo.get("expires_at") is not None and now >= int(promo["expires_at"]):
        problem = "This promotion code has expired."
    elif (
        promo.get("max_redemptions") is not None
        and promo["times_redeemed"] >= promo["max_redemptions"]
    ):
        problem = "This promotion code has been redeemed the most times it can be."
    elif promo.get("customer") and promo["customer"] != customer_id:
        problem = "This promotion code cannot be redeemed by this customer."
    elif restrictions["first_time_transaction"] and customer_id and _has_paid(ctx, customer_id):
        problem = "This promotion code is only valid for a customer's first purchase."
    elif (
        amount is not None
        and restrictions.get("minimum_amount") is not None
        and restrictions.get("minimum_amount_currency") == currency
        and amount < restrictions["minimum_amount"]
    ):
        problem = "This promotion code needs a larger order."
    elif not coupon_valid(coupon, now):
        problem = f"Coupon expired: {coupon['id']}"
    if problem is not None:
        raise StripeError(problem, param=param)
    return promo


def _has_paid(ctx: Ctx, customer_id: str) -> bool:
    return any(charge["paid"] for charge in ctx.account.where("charge", customer=customer_id))


def _redeemable_coupon(ctx: Ctx, entry: dict[str, Any], param: str, now: int) -> dict[str, Any]:
    coupon_id = entry.get("coupon")
    if not coupon_id:
        raise parameter_missing(f"{param}[coupon]")
    coupon = ctx.account.get(coupon_id, "coupon", param=f"{param}[coupon]")
    if not coupon_valid(coupon, now):
        raise StripeError(f"Coupon expired: {coupon_id}", param=f"{param}[coupon]")
    return coupon


def _new_discount(
    ctx: Ctx,
    coupon: dict[str, Any],
    customer_id: str,
    now: int,
    subscription_id: str | None,
    invoice_id: str | None,
) -> dict[str, Any]:
    """Store a discount redeeming `coupon` once more."""
    end = None
    if coupon["duration"] == "repeating":
        end = add_interval(now, "month", int(coupon.get("duration_in_months") or 1))
    discount = ctx.build(
        "discount",
        "di",
        customer=customer_id,
        end=end,
        invoice=invoice_id,
        start=now,
        subscription=subscription_id,
        source={"coupon": coupon["id"], "type": "coupon"},
        _coupon=coupon["id"],
    )
    discount.pop("created", None)
    discount.pop("livemode", None)
    discount.pop("metadata", None)
    ctx.account.add(discount)
    coupon["times_redeemed"] += 1
    coupon["valid"] = coupon_valid(coupon, now)
    return discount


def active_discounts(
    ctx: Ctx, ids: list[str], at: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Return (discount, coupon) for each discount still in force at `at`."""
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
