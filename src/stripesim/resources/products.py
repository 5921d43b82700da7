"""Products: create (custom ids allowed), retrieve, update, delete, list, search."""

from __future__ import annotations

from typing import Any

from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, paginate, search, update_metadata
from stripesim.registry import Ctx, route

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


def param_name(prefix: str, path: str) -> str:
    """`path` (e.g. `recurring[interval]`) as a parameter nested under `prefix`, if any."""
    if not prefix:
        return path
    head, bracket, rest = path.partition("[")
    return f"{prefix}[{head}]" + (bracket + rest if bracket else "")


def reference(ctx: Ctx, object_id: Any, kind: str, param: str, label: str) -> dict[str, Any]:
    """An object named by a request parameter; Stripe answers 400 `resource_missing` when absent."""
    obj = ctx.account.find(object_id)
    if obj is None or obj.get("object") != kind or obj.get("deleted"):
        raise StripeError(f"No such {label}: '{object_id}'", code="resource_missing", param=param)
    return obj


def _features(value: Any) -> list[dict[str, Any]]:
    if not value:
        return []
    return [{"name": str(feature.get("name"))} for feature in value]


def _dimensions(value: Any) -> dict[str, float] | None:
    if not value:
        return None
    return {key: float(value[key]) for key in ("height", "length", "weight", "width")}


def build_product(ctx: Ctx, params: dict[str, Any], *, param_prefix: str = "") -> dict[str, Any]:
    """Create, store and announce a product from create params (or a price's `product_data`)."""
    if not params.get("name"):
        raise parameter_missing(param_name(param_prefix, "name"))
    custom_id = params.get("id")
    if custom_id and ctx.account.find(custom_id) is not None:
        raise StripeError(
            "Product already exists.",
            code="resource_already_exists",
            param=param_name(param_prefix, "id"),
        )
    now = ctx.now()
    product = ctx.build(
        "product",
        "prod",
        id=custom_id or None,
        created=now,
        updated=now,
        active=as_bool(params, "active", True),
        default_price=None,
        description=params.get("description") or None,
        images=list(params.get("images") or []),
        marketing_features=_features(params.get("marketing_features")),
        name=params["name"],
        package_dimensions=_dimensions(params.get("package_dimensions")),
        shippable=as_bool(params, "shippable"),
        statement_descriptor=params.get("statement_descriptor") or None,
        tax_code=params.get("tax_code")
        or (params.get("tax_details") or {}).get("tax_code")
        or None,
        unit_label=params.get("unit_label") or None,
        url=params.get("url") or None,
        type=params.get("type") or "service",
    )
    if product["type"] not in ("good", "service"):
        raise StripeError(
            "Invalid type: must be one of good, service",
            code="parameter_invalid_string",
            param=param_name(param_prefix, "type"),
        )
    update_metadata(product, params.get("metadata"))
    ctx.account.add(product)
    ctx.emit("product.created", product, created=now)
    return product


@route("POST", "/v1/products", "ProductCreateParams")
def create_product(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    # Validate the inline default price before storing anything: bad input changes nothing.
    price_data = params.get("default_price_data")
    if price_data is not None:
        from stripesim.resources.prices import check_price_params

        check_price_params(ctx, price_data, param_prefix="default_price_data", product_pending=True)
    product = build_product(ctx, params)
    if price_data is not None:
        from stripesim.resources.prices import build_price

        price = build_price(
            ctx, {**price_data, "product": product["id"]}, param_prefix="default_price_data"
        )
        previous = {"default_price": None}
        product["default_price"] = price["id"]
        ctx.emit("product.updated", product, previous=previous)
    return product


@route("GET", "/v1/products/search", "ProductSearchParams")
def search_products(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return search(ctx.account, "product", params, "/v1/products/search")


@route("GET", "/v1/products/{product_id}", "ProductRetrieveParams")
def retrieve_product(ctx: Ctx, params: dict[str, Any], product_id: str) -> dict[str, Any]:
    return ctx.account.get(product_id, "product")


@route("POST", "/v1/products/{product_id}", "ProductUpdateParams")
def update_product(ctx: Ctx, params: dict[str, Any], product_id: str) -> dict[str, Any]:
    product = ctx.account.get(product_id, "product")
    previous: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for key in _UPDATABLE:
        if key not in params:
            continue
        value = params[key]
        if key == "marketing_features":
            value = _features(value)
        elif key == "package_dimensions":
            value = _dimensions(value)
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
        price = reference(ctx, price_id, "price", "default_price", "price")
        if price["product"] != product_id:
            raise StripeError(
                f"The price `{price_id}` does not belong to product `{product_id}`.",
                param="default_price",
            )
        if not price["active"]:
            raise StripeError("The default price must be active.", param="default_price")
        values["default_price"] = price_id
    for key, value in values.items():
        if product.get(key) != value:
            previous[key] = product.get(key)
            product[key] = value
    if "metadata" in params:
        before = dict(product.get("metadata") or {})
        update_metadata(product, params["metadata"])
        if product["metadata"] != before:
            previous["metadata"] = before
    if previous:
        product["updated"] = ctx.now()
        ctx.emit("product.updated", product, previous=previous)
    return product


@route("DELETE", "/v1/products/{product_id}", "ProductDeleteParams")
def delete_product(ctx: Ctx, params: dict[str, Any], product_id: str) -> dict[str, Any]:
    product = ctx.account.get(product_id, "product")
    if any(price["product"] == product_id for price in ctx.account.all("price")):
        raise StripeError(
            "This product cannot be deleted because it has one or more user-created prices.",
        )
    ctx.emit("product.deleted", product)  # the full product, as it was
    product["deleted"] = True
    return {"id": product_id, "object": "product", "deleted": True}


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
        where=lambda p: (
            (active is None or p["active"] == active)
            and (not ids or p["id"] in ids)
            and (shippable is None or p.get("shippable") == shippable)
            and (kind is None or p.get("type") == kind)
            and (url is None or p.get("url") == url)
        ),
    )
