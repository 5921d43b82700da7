"""Customers: create, retrieve, update, delete, list, search."""

from __future__ import annotations

from typing import Any

from stripesim import objects
from stripesim.lists import apply_changes, update_metadata
from stripesim.registry import Ctx, list_route, route, search_route
from stripesim.resources.tax_ids import check_tax_id, new_tax_id

_UPDATABLE = (
    "email",
    "name",
    "description",
    "phone",
    "address",
    "shipping",
    "preferred_locales",
    "tax_exempt",
)


def _value(key: str, raw: Any) -> Any:
    """Return a customer field as Stripe stores it from the request's value."""
    if key == "address":
        return objects.address(raw) if isinstance(raw, dict) and raw else None
    if key == "shipping":
        return objects.shipping(raw)
    if key == "preferred_locales":
        return list(raw or [])
    if key == "tax_exempt":
        return raw or "none"
    return raw or None


@route("POST", "/v1/customers", "CustomerCreateParams")
def create_customer(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    clock_id = params.get("test_clock")
    if clock_id:
        ctx.account.get(clock_id, "test_helpers.test_clock", param="test_clock", label="test clock")
    pm = (params.get("invoice_settings") or {}).get("default_payment_method") or None
    customer = ctx.build(
        "customer",
        "cus",
        created=ctx.now(clock_id),
        balance=int(params.get("balance") or 0),
        invoice_prefix=ctx.sim.platform.id[-4:].upper() + f"{ctx.account.count('customer'):04d}",
        invoice_settings={
            "custom_fields": None,
            "default_payment_method": pm,
            "footer": None,
            "rendering_options": None,
        },
        test_clock=clock_id,
        **{key: _value(key, params.get(key)) for key in _UPDATABLE},
    )
    update_metadata(customer, params.get("metadata"))
    tax_ids = [
        check_tax_id(entry, f"tax_id_data[{index}]")
        for index, entry in enumerate(params.get("tax_id_data") or [])
    ]
    ctx.account.add(customer)
    ctx.emit("customer.created", customer, created=customer["created"])
    for kind, value in tax_ids:
        new_tax_id(ctx, customer, kind, value)
    return customer


search_route("/v1/customers/search", "customer", "CustomerSearchParams")


@route("GET", "/v1/customers/{customer_id}", "CustomerRetrieveParams")
def retrieve_customer(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    obj = ctx.account.find(customer_id)
    if obj is not None and obj.get("object") == "customer" and obj.get("_deleted"):
        return objects.deleted("customer", customer_id)
    return ctx.account.get(customer_id, "customer")


@route("POST", "/v1/customers/{customer_id}", "CustomerUpdateParams")
def update_customer(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    values = {key: _value(key, params[key]) for key in _UPDATABLE if key in params}
    previous = apply_changes(customer, values, params)
    settings = params.get("invoice_settings")
    if isinstance(settings, dict) and "default_payment_method" in settings:
        previous["invoice_settings"] = dict(customer["invoice_settings"])
        pm = settings["default_payment_method"] or None
        if pm:
            ctx.account.get(
                pm,
                "payment_method",
                param="invoice_settings[default_payment_method]",
                label="PaymentMethod",
            )
        customer["invoice_settings"]["default_payment_method"] = pm
    ctx.emit_update(
        "customer.updated", customer, previous, created=ctx.now_for_customer(customer_id)
    )
    return customer


@route("DELETE", "/v1/customers/{customer_id}", "CustomerDeleteParams")
def delete_customer(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    now = ctx.now_for_customer(customer_id)
    for subscription in ctx.account.where("subscription", customer=customer_id):
        if subscription["status"] not in ("canceled", "incomplete_expired"):
            for hook in CANCEL_HOOKS:
                hook(ctx, subscription)
    ctx.account.delete(customer)
    ctx.emit("customer.deleted", customer, created=now)
    return objects.deleted("customer", customer_id)


list_route("/v1/customers", "customer", "CustomerListParams", filters=("email", "test_clock"))


# Deleting a customer cancels its subscriptions; the subscriptions module registers how.
CANCEL_HOOKS: list[Any] = []
