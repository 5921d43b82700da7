"""Prices: routes over the catalog (recurring or one-time, per-unit or tiered, lookup keys)."""

from __future__ import annotations

from typing import Any

from stripesim.catalog import (
    build_price,
    check_lookup_key,
    lookup_key_owner,
    public_view,
    tax_behavior_of,
    transfer_lookup_key,
)
from stripesim.errors import StripeError
from stripesim.lists import apply_changes, as_bool, paginate, search
from stripesim.registry import Ctx, route


def _wants_tiers(params: dict[str, Any], *, in_list: bool = False) -> bool:
    wanted = "data.tiers" if in_list else "tiers"
    return wanted in (params.get("expand") or [])


@route("POST", "/v1/prices", "PriceCreateParams")
def create_price(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return public_view(build_price(ctx, params), with_tiers=_wants_tiers(params))


@route("GET", "/v1/prices/search", "PriceSearchParams")
def search_prices(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    result = search(ctx.account, "price", params, "/v1/prices/search")
    result["data"] = [public_view(price) for price in result["data"]]
    return result


@route("GET", "/v1/prices/{price_id}", "PriceRetrieveParams")
def retrieve_price(ctx: Ctx, params: dict[str, Any], price_id: str) -> dict[str, Any]:
    return public_view(ctx.account.get(price_id, "price"), with_tiers=_wants_tiers(params))


@route("POST", "/v1/prices/{price_id}", "PriceUpdateParams")
def update_price(ctx: Ctx, params: dict[str, Any], price_id: str) -> dict[str, Any]:
    price = ctx.account.get(price_id, "price")
    if "tax_behavior" in params:
        behavior = tax_behavior_of(params["tax_behavior"], "tax_behavior")
        if price["tax_behavior"] not in ("unspecified", behavior):
            raise StripeError(
                "tax_behavior cannot be changed once it is set to inclusive or exclusive.",
                param="tax_behavior",
            )
    if params.get("currency_options"):
        raise StripeError(
            "stripesim does not support `currency_options`; create one price per currency.",
            param="currency_options",
        )
    owner = None
    if params.get("lookup_key"):
        _, owner = check_lookup_key(ctx, params, "", besides=price_id)
    values: dict[str, Any] = {}
    if "active" in params:
        values["active"] = as_bool(params, "active")
    if "nickname" in params:
        values["nickname"] = params["nickname"] or None
    if "lookup_key" in params:
        values["lookup_key"] = params["lookup_key"] or None
    if "tax_behavior" in params:
        values["tax_behavior"] = params["tax_behavior"]
    if values.get("active") and price["lookup_key"] and "lookup_key" not in params:
        # Reactivating a price whose key another active price took meanwhile is a clash too.
        clash = lookup_key_owner(ctx, price["lookup_key"], besides=price_id)
        if clash is not None:
            raise StripeError(
                f"A price (`{clash['id']}`) already uses that lookup key.", param="active"
            )
    transfer_lookup_key(ctx, owner)
    previous = apply_changes(price, values, params)
    if previous:
        ctx.emit("price.updated", public_view(price), previous=previous)
    return public_view(price, with_tiers=_wants_tiers(params))


@route("GET", "/v1/prices", "PriceListParams")
def list_prices(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    active = as_bool(params, "active")
    product = params.get("product")
    kind = params.get("type")
    currency = (params.get("currency") or "").lower() or None
    recurring = params.get("recurring") or {}
    lookup_keys = set(params.get("lookup_keys") or [])

    def wanted(price: dict[str, Any]) -> bool:
        rec = price.get("recurring") or {}
        return (
            (not lookup_keys or price["lookup_key"] in lookup_keys)
            and all(
                rec.get(key) == recurring[key]
                for key in ("interval", "usage_type", "meter")
                if recurring.get(key)
            )
            and (not recurring or bool(rec))
        )

    with_tiers = _wants_tiers(params, in_list=True)
    clean = {
        **params,
        "expand": [path for path in params.get("expand") or [] if path != "data.tiers"],
    }
    return paginate(
        ctx.account,
        "price",
        clean,
        "/v1/prices",
        filters={
            "active": active,
            "product": product,
            "type": kind,
            "currency": currency,
            # One lookup key is an index lookup; several are checked one by one.
            "lookup_key": next(iter(lookup_keys)) if len(lookup_keys) == 1 else None,
        },
        where=wanted,
        view=lambda price: public_view(price, with_tiers=with_tiers),
    )
