"""Customers: create, retrieve, update, delete, list, search."""

from __future__ import annotations

from typing import Any

from stripesim.lists import paginate, search, update_metadata
from stripesim.registry import Ctx, route

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


def _previous(obj: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {key: obj.get(key) for key in keys}


@route("POST", "/v1/customers", "CustomerCreateParams")
def create_customer(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    clock_id = params.get("test_clock")
    if clock_id:
        ctx.account.get(clock_id, "test_helpers.test_clock", param="test_clock", label="test clock")
    customer = ctx.build(
        "customer",
        "cus",
        created=ctx.now(clock_id),
        email=params.get("email"),
        name=params.get("name"),
        description=params.get("description"),
        phone=params.get("phone"),
        address=params.get("address"),
        shipping=params.get("shipping"),
        balance=int(params.get("balance") or 0),
        currency=None,
        default_source=None,
        delinquent=False,
        discount=None,
        invoice_prefix=ctx.sim.platform.id[-4:].upper()
        + f"{len(ctx.account.order.get('customer', [])):04d}",
        invoice_settings={
            "custom_fields": None,
            "default_payment_method": (params.get("invoice_settings") or {}).get(
                "default_payment_method"
            ),
            "footer": None,
            "rendering_options": None,
        },
        next_invoice_sequence=1,
        preferred_locales=params.get("preferred_locales") or [],
        tax_exempt=params.get("tax_exempt") or "none",
        test_clock=clock_id,
    )
    update_metadata(customer, params.get("metadata"))
    ctx.account.add(customer)
    ctx.emit("customer.created", customer, created=customer["created"])
    return customer


@route("GET", "/v1/customers/search", "CustomerSearchParams")
def search_customers(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return search(ctx.account, "customer", params, "/v1/customers/search")


@route("GET", "/v1/customers/{customer_id}", "CustomerRetrieveParams")
def retrieve_customer(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    obj = ctx.account.find(customer_id)
    if obj is not None and obj.get("object") == "customer" and obj.get("deleted"):
        return {"id": customer_id, "object": "customer", "deleted": True}
    return ctx.account.get(customer_id, "customer")


@route("POST", "/v1/customers/{customer_id}", "CustomerUpdateParams")
def update_customer(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    changed = [key for key in _UPDATABLE if key in params and params[key] != customer.get(key)]
    previous = _previous(customer, changed)
    for key in changed:
        customer[key] = params[key] or None
    if "metadata" in params:
        previous["metadata"] = dict(customer.get("metadata") or {})
        update_metadata(customer, params["metadata"])
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
    for subscription in ctx.account.all("subscription"):
        if subscription["customer"] == customer_id and subscription["status"] not in (
            "canceled",
            "incomplete_expired",
        ):
            for hook in CANCEL_HOOKS:
                hook(ctx, subscription)
    customer["deleted"] = True
    ctx.emit("customer.deleted", customer, created=now)
    return {"id": customer_id, "object": "customer", "deleted": True}


@route("GET", "/v1/customers", "CustomerListParams")
def list_customers(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    email = params.get("email")
    clock = params.get("test_clock")
    return paginate(
        ctx.account,
        "customer",
        params,
        "/v1/customers",
        where=lambda c: (
            (email is None or c.get("email") == email)
            and (clock is None or c.get("test_clock") == clock)
        ),
    )


# Deleting a customer cancels its subscriptions; the subscriptions module registers how.
CANCEL_HOOKS: list[Any] = []
