"""Promotion codes: customer-facing codes for a coupon, with redemption limits and restrictions.

A code is redeemed wherever a discount is (`discounts[i][promotion_code]` on subscriptions,
invoices and Checkout Sessions); `billing.discounts` checks it there.
"""

from __future__ import annotations

from typing import Any

from stripesim.billing import coupon_id
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, as_int, update_metadata
from stripesim.registry import Ctx, changed_since, list_route, retrieve_route, route
from stripesim.state import snapshot

KIND = "promotion_code"


def _restrictions(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    minimum = as_int(raw, "minimum_amount", param="restrictions[minimum_amount]")
    currency = (raw.get("minimum_amount_currency") or "").lower() or None
    if minimum is not None and currency is None:
        raise parameter_missing("restrictions[minimum_amount_currency]")
    return {
        "first_time_transaction": bool(as_bool(raw, "first_time_transaction", False)),
        "minimum_amount": minimum,
        "minimum_amount_currency": currency if minimum is not None else None,
    }


@route("POST", "/v1/promotion_codes", "PromotionCodeCreateParams")
def create_promotion_code(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    promotion = params.get("promotion") or {}
    if not promotion.get("coupon"):
        raise parameter_missing("promotion[coupon]")
    coupon = ctx.account.get(promotion["coupon"], "coupon", param="promotion[coupon]")
    if params.get("customer"):
        ctx.account.get(params["customer"], "customer", param="customer")
    code = str(params.get("code") or coupon_id())
    if any(found["active"] for found in ctx.account.where(KIND, code=code)):
        raise StripeError(
            "An active promotion code with that code already exists.",
            code="resource_already_exists",
            param="code",
        )
    now = ctx.now()
    promo = ctx.build(
        KIND,
        "promo",
        created=now,
        active=bool(as_bool(params, "active", True)),
        code=code,
        customer=params.get("customer") or None,
        expires_at=as_int(params, "expires_at"),
        max_redemptions=as_int(params, "max_redemptions"),
        promotion={"coupon": coupon["id"], "type": "coupon"},
        restrictions=_restrictions(params.get("restrictions")),
        _coupon=coupon["id"],
    )
    update_metadata(promo, params.get("metadata"))
    ctx.account.add(promo)
    ctx.emit("promotion_code.created", promo, created=now)
    return promo


retrieve_route(
    "/v1/promotion_codes/{promo_id}", KIND, "PromotionCodeRetrieveParams", label="promotion code"
)


@route("POST", "/v1/promotion_codes/{promo_id}", "PromotionCodeUpdateParams")
def update_promotion_code(ctx: Ctx, params: dict[str, Any], promo_id: str) -> dict[str, Any]:
    promo = ctx.account.get(promo_id, KIND, label="promotion code")
    before = snapshot(promo)
    if "active" in params:
        promo["active"] = bool(as_bool(params, "active"))
    update_metadata(promo, params.get("metadata"))
    ctx.emit_update(
        "promotion_code.updated", promo, changed_since(before, promo), created=ctx.now()
    )
    return promo


list_route(
    "/v1/promotion_codes",
    KIND,
    "PromotionCodeListParams",
    filters=("code", "customer"),
    flags=("active",),
    private=("coupon",),
)
