"""Products: create (custom ids allowed), retrieve, update, delete, list, search."""

from __future__ import annotations

from typing import Any

from stripesim import objects
from stripesim.catalog import (
    build_price,
    build_product,
    check_price_params,
    product_dimensions,
    product_features,
)
from stripesim.errors import StripeError
from stripesim.lists import apply_changes, as_bool, paginate, reference
from stripesim.registry import Ctx, retrieve_route, route, search_route

_UPDATABLE = (
    "name",
    "description",
    "images",
    "marketing_features",
    "package_dimensions",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "unit_label",
    "url",
)


@route("POST", "/v1/products", "ProductCreateParams")
def create_product(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    # Validate the inline default price before storing anything: bad input changes nothing.
    price_data = params.get("default_price_data")
    if price_data is not None:
        check_price_params(ctx, price_data, param_prefix="default_price_data", product_pending=True)
    product = build_product(ctx, params)
    if price_data is not None:
        price = build_price(
            ctx, {**price_data, "product": product["id"]}, param_prefix="default_price_data"
        )
        previous = {"default_price": None}
        product["default_price"] = price["id"]
        ctx.emit("product.updated", product, previous=previous)
    return product


search_route("/v1/products/search", "product", "ProductSearchParams")


retrieve_route("/v1/products/{product_id}", "product", "ProductRetrieveParams")


@route("POST", "/v1/products/{product_id}", "ProductUpdateParams")
def update_product(ctx: Ctx, params: dict[str, Any], product_id: str) -> dict[str, Any]:
    product = ctx.account.get(product_id, "product")
    values: dict[str, Any] = {}
    for key in _UPDATABLE:
        if key not in params:
            continue
        value = params[key]
        if key == "marketing_features":
            value = product_features(value)
        elif key == "package_dimensions":
            value = product_dimensions(value)
        elif key == "shippable":
            value = as_bool(params, key)
        elif key == "images":
            value = list(value or [])
        elif value == "":
            value = None
        values[key] = value
    if "tax_details" in params:
        values["tax_code"] = (params["tax_details"] or {}).get("tax_code") or None
    if "active" in params:
        values["active"] = as_bool(params, "active")
    if "default_price" in params:
        price_id = params["default_price"]
        price = reference(ctx.account, price_id, "price", "default_price", "price")
        if price["product"] != product_id:
            raise StripeError(
                f"The price `{price_id}` does not belong to product `{product_id}`.",
                param="default_price",
            )
        if not price["active"]:
            raise StripeError("The default price must be active.", param="default_price")
        values["default_price"] = price_id
    previous = apply_changes(product, values, params)
    if previous:
        product["updated"] = ctx.now()
        ctx.emit("product.updated", product, previous=previous)
    return product


@route("DELETE", "/v1/products/{product_id}", "ProductDeleteParams")
def delete_product(ctx: Ctx, params: dict[str, Any], product_id: str) -> dict[str, Any]:
    product = ctx.account.get(product_id, "product")
    if ctx.account.where("price", product=product_id):
        raise StripeError(
            "This product cannot be deleted because it has one or more user-created prices.",
        )
    ctx.emit("product.deleted", product)  # the full product, as it was
    ctx.account.delete(product)
    return objects.deleted("product", product_id)


@route("GET", "/v1/products", "ProductListParams")
def list_products(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    active = as_bool(params, "active")
    shippable = as_bool(params, "shippable")
    ids = set(params.get("ids") or [])
    kind = params.get("type")
    url = params.get("url")
    return paginate(
        ctx.account,
        "product",
        params,
        "/v1/products",
        filters={"active": active, "shippable": shippable, "type": kind, "url": url},
        where=lambda p: not ids or p["id"] in ids,
    )
