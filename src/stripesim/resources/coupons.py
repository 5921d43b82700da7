"""Coupons (percent or amount off, once / repeating / forever) and Tax Rates."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from stripesim import billing, objects
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, as_decimal, as_int, update_metadata
from stripesim.registry import Ctx, changed_since, list_route, retrieve_route, route
from stripesim.state import snapshot


def _number(value: Decimal) -> float | int:
    """A percentage as Stripe prints it: 25 or 25.5."""
    return int(value) if value == value.to_integral_value() else float(value)


# -- coupons --------------------------------------------------------------------------------------


@route("POST", "/v1/coupons", "CouponCreateParams")
def create_coupon(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    percent = as_decimal(params, "percent_off")
    amount = as_int(params, "amount_off")
    if percent is None and amount is None:
        raise StripeError(
            "You must pass either `percent_off` or `amount_off`.", param="percent_off"
        )
    if percent is not None and amount is not None:
        raise StripeError(
            "You may only specify one of these parameters: amount_off, percent_off.",
            param="amount_off",
        )
    if percent is not None and not 0 < percent <= 100:
        raise StripeError(
            "Invalid percent_off: must be greater than 0 and at most 100", param="percent_off"
        )
    currency = (params.get("currency") or "").lower() or None
    if amount is not None:
        if amount <= 0:
            raise StripeError("Invalid amount_off: must be greater than 0", param="amount_off")
        if not currency:
            raise parameter_missing("currency")
    options = _currency_options(params.get("currency_options"), amount, currency)
    duration = params.get("duration") or "once"
    if duration not in ("once", "repeating", "forever"):
        raise StripeError(
            "Invalid duration: must be one of forever, once, or repeating", param="duration"
        )
    months = as_int(params, "duration_in_months")
    if duration == "repeating" and not months:
        raise parameter_missing("duration_in_months")
    if duration != "repeating" and months is not None:
        raise StripeError(
            "duration_in_months can only be set when duration is repeating.",
            param="duration_in_months",
        )
    coupon_id = params.get("id") or billing.coupon_id()
    existing = ctx.account.find(coupon_id)
    if existing is not None and not existing.get("_deleted"):
        raise StripeError("Coupon already exists.", code="resource_already_exists", param="id")
    if existing is not None:
        ctx.account.remove(coupon_id)
    name = params.get("name") or None
    coupon = ctx.build(
        "coupon",
        "",
        id=coupon_id,
        created=ctx.now(),
        amount_off=amount,
        currency=currency if amount is not None else None,
        duration=duration,
        duration_in_months=months if duration == "repeating" else None,
        max_redemptions=as_int(params, "max_redemptions"),
        name=name,
        percent_off=_number(percent) if percent is not None else None,
        redeem_by=as_int(params, "redeem_by"),
    )
    if options:
        coupon["_currency_options"] = options
    if params.get("applies_to"):
        coupon["_applies_to"] = {
            "products": list((params["applies_to"] or {}).get("products") or [])
        }
    update_metadata(coupon, params.get("metadata"))
    ctx.account.add(coupon)
    ctx.emit("coupon.created", coupon, created=coupon["created"])
    return _shown(coupon, params)


@route("GET", "/v1/coupons/{coupon_id}", "CouponRetrieveParams")
def retrieve_coupon(ctx: Ctx, params: dict[str, Any], coupon_id: str) -> dict[str, Any]:
    return _shown(ctx.account.get(coupon_id, "coupon"), params)


def _currency_options(
    raw: Any, amount: int | None, currency: str | None
) -> dict[str, dict[str, int]]:
    """Check `currency_options[<currency>][amount_off]`; return them with the coupon's own."""
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise StripeError("Invalid hash", param="currency_options")
    if amount is None or currency is None:
        raise StripeError(
            "currency_options can only be set on a coupon with amount_off.",
            param="currency_options",
        )
    options = {currency: {"amount_off": amount}}
    for code, option in raw.items():
        param = f"currency_options[{code}][amount_off]"
        value = as_int(option, "amount_off") if isinstance(option, dict) else None
        if value is None:
            raise parameter_missing(param)
        if value <= 0:
            raise StripeError("Invalid amount_off: must be greater than 0", param=param)
        options[str(code).lower()] = {"amount_off": value}
    return options


def _shown(coupon: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The coupon with `currency_options` when asked for (`expand[]`: Stripe includes it only
    then)."""
    if "currency_options" not in (params.get("expand") or []):
        return coupon
    return {**coupon, "currency_options": coupon.get("_currency_options") or {}}


@route("POST", "/v1/coupons/{coupon_id}", "CouponUpdateParams")
def update_coupon(ctx: Ctx, params: dict[str, Any], coupon_id: str) -> dict[str, Any]:
    coupon = ctx.account.get(coupon_id, "coupon")
    before = snapshot(coupon)
    if "name" in params:
        coupon["name"] = params["name"] or None
    update_metadata(coupon, params.get("metadata"))
    ctx.emit_update("coupon.updated", coupon, changed_since(before, coupon), created=ctx.now())
    return coupon


@route("DELETE", "/v1/coupons/{coupon_id}", "CouponDeleteParams")
def delete_coupon(ctx: Ctx, params: dict[str, Any], coupon_id: str) -> dict[str, Any]:
    coupon = ctx.account.get(coupon_id, "coupon")
    ctx.account.delete(coupon)
    coupon["valid"] = False
    ctx.emit("coupon.deleted", coupon, created=ctx.now())
    return objects.deleted("coupon", coupon_id)


list_route("/v1/coupons", "coupon", "CouponListParams")


# -- tax rates ------------------------------------------------------------------------------------

_TAX_TEXT = ("country", "description", "display_name", "jurisdiction", "state", "tax_type")


@route("POST", "/v1/tax_rates", "TaxRateCreateParams")
def create_tax_rate(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    for key in ("display_name", "percentage", "inclusive"):
        if params.get(key) in (None, ""):
            raise parameter_missing(key)
    percentage = as_decimal(params, "percentage")
    assert percentage is not None
    if not 0 <= percentage <= 100:
        raise StripeError("Invalid percentage: must be between 0 and 100", param="percentage")
    rate = ctx.build(
        "tax_rate",
        "txr",
        created=ctx.now(),
        active=bool(as_bool(params, "active", True)),
        country=params.get("country") or None,
        description=params.get("description") or None,
        display_name=params["display_name"],
        effective_percentage=_number(percentage),
        inclusive=bool(as_bool(params, "inclusive")),
        jurisdiction=params.get("jurisdiction") or None,
        percentage=_number(percentage),
        state=params.get("state") or None,
        tax_type=params.get("tax_type") or None,
    )
    update_metadata(rate, params.get("metadata"))
    ctx.account.add(rate)
    ctx.emit("tax_rate.created", rate, created=rate["created"])
    return rate


retrieve_route("/v1/tax_rates/{rate_id}", "tax_rate", "TaxRateRetrieveParams", label="tax rate")


@route("POST", "/v1/tax_rates/{rate_id}", "TaxRateUpdateParams")
def update_tax_rate(ctx: Ctx, params: dict[str, Any], rate_id: str) -> dict[str, Any]:
    rate = ctx.account.get(rate_id, "tax_rate", label="tax rate")
    before = snapshot(rate)
    for key in _TAX_TEXT:
        if key in params:
            rate[key] = params[key] or None
    if "active" in params:
        rate["active"] = bool(as_bool(params, "active"))
    update_metadata(rate, params.get("metadata"))
    ctx.emit_update("tax_rate.updated", rate, changed_since(before, rate), created=ctx.now())
    return rate


list_route("/v1/tax_rates", "tax_rate", "TaxRateListParams", flags=("active", "inclusive"))
