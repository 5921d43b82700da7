"""Subscriptions and subscription items: thin routes over the billing engine (stripesim.billing)."""

from __future__ import annotations

from typing import Any

from stripesim import billing, objects
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import as_bool, paginate, required_object, search
from stripesim.registry import Ctx, route
from stripesim.resources.customers import CANCEL_HOOKS

_ENDED = ("canceled", "incomplete_expired")


def _cancel_for_deleted_customer(ctx: Ctx, subscription: dict[str, Any]) -> None:
    billing.cancel_subscription(ctx, subscription["id"])


if _cancel_for_deleted_customer not in CANCEL_HOOKS:
    CANCEL_HOOKS.append(_cancel_for_deleted_customer)


def _view(ctx: Ctx, sub: dict[str, Any]) -> dict[str, Any]:
    billing.items_of(ctx.account, sub)
    return sub


@route("POST", "/v1/subscriptions", "SubscriptionCreateParams")
def create_subscription(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return _view(ctx, billing.create_subscription(ctx, params))


@route("GET", "/v1/subscriptions/search", "SubscriptionSearchParams")
def search_subscriptions(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return search(
        ctx.account,
        "subscription",
        params,
        "/v1/subscriptions/search",
        view=lambda s: _view(ctx, s),
    )


@route("GET", "/v1/subscriptions/{subscription_id}", "SubscriptionRetrieveParams")
def retrieve_subscription(ctx: Ctx, params: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    return _view(ctx, ctx.account.get(subscription_id, "subscription"))


@route("POST", "/v1/subscriptions/{subscription_id}", "SubscriptionUpdateParams")
def update_subscription(ctx: Ctx, params: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    return _view(ctx, billing.update_subscription(ctx, subscription_id, params))


@route("DELETE", "/v1/subscriptions/{subscription_id}", "SubscriptionCancelParams")
def cancel_subscription(ctx: Ctx, params: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    details = params.get("cancellation_details") or {}
    sub = billing.cancel_subscription(
        ctx,
        subscription_id,
        invoice_now=bool(as_bool(params, "invoice_now", False)),
        prorate=bool(as_bool(params, "prorate", False)),
        comment=details.get("comment") or None,
        feedback=details.get("feedback") or None,
    )
    return _view(ctx, sub)


@route("POST", "/v1/subscriptions/{subscription_id}/pause", "SubscriptionPauseParams")
def pause_subscription(ctx: Ctx, params: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    return _view(ctx, billing.pause_subscription(ctx, subscription_id, params))


@route("POST", "/v1/subscriptions/{subscription_id}/resume", "SubscriptionResumeParams")
def resume_subscription(ctx: Ctx, params: dict[str, Any], subscription_id: str) -> dict[str, Any]:
    return _view(ctx, billing.resume_subscription(ctx, subscription_id, params))


@route("GET", "/v1/subscriptions", "SubscriptionListParams")
def list_subscriptions(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    customer = params.get("customer")
    price = params.get("price")
    status = params.get("status")
    clock = params.get("test_clock")
    collection = params.get("collection_method")

    def where(sub: dict[str, Any]) -> bool:
        # No status lists every subscription not ended; `ended` the ended ones; `all` all.
        if status in (None, "") and sub["status"] in _ENDED:
            return False
        if status == "ended" and sub["status"] not in _ENDED:
            return False
        items = billing.items_of(ctx.account, sub)
        return not (price and all(item["price"]["id"] != price for item in items))

    exact = status if status not in (None, "", "ended", "all") else None
    return paginate(
        ctx.account,
        "subscription",
        params,
        "/v1/subscriptions",
        filters={
            "customer": customer or None,
            "test_clock": clock or None,
            "collection_method": collection or None,
            "status": exact,
        },
        where=where,
    )


# -- subscription items ----------------------------------------------------------------------------

_CHANGE_KEYS = ("proration_behavior", "proration_date", "payment_behavior")


def _item_change(params: dict[str, Any]) -> dict[str, Any]:
    return {key: params[key] for key in _CHANGE_KEYS if key in params}


@route("POST", "/v1/subscription_items", "SubscriptionItemCreateParams")
def create_subscription_item(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    sub = required_object(ctx.account, params, "subscription", "subscription")
    subscription_id = sub["id"]
    if not params.get("price"):
        raise parameter_missing("price")
    before = set(sub["_item_ids"])
    item: dict[str, Any] = {"price": params["price"]}
    for key in ("quantity", "metadata", "tax_rates"):
        if key in params:
            item[key] = params[key]
    billing.update_subscription(ctx, subscription_id, {"items": [item], **_item_change(params)})
    new_ids = [item_id for item_id in sub["_item_ids"] if item_id not in before]
    return ctx.account.get(new_ids[-1], "subscription_item")


@route("GET", "/v1/subscription_items/{item_id}", "SubscriptionItemRetrieveParams")
def retrieve_subscription_item(ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = ctx.account.get(item_id, "subscription_item")
    sub = ctx.account.find(item["subscription"])
    if sub is not None:
        billing.items_of(ctx.account, sub)
    return item


@route("POST", "/v1/subscription_items/{item_id}", "SubscriptionItemUpdateParams")
def update_subscription_item(ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = ctx.account.get(item_id, "subscription_item")
    change: dict[str, Any] = {"id": item_id}
    for key in ("price", "quantity", "metadata", "tax_rates"):
        if key in params:
            change[key] = params[key]
    billing.update_subscription(
        ctx, item["subscription"], {"items": [change], **_item_change(params)}
    )
    return item


@route("DELETE", "/v1/subscription_items/{item_id}", "SubscriptionItemDeleteParams")
def delete_subscription_item(ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = ctx.account.get(item_id, "subscription_item")
    sub = ctx.account.get(item["subscription"], "subscription")
    if len(sub["_item_ids"]) <= 1:
        raise StripeError(
            "A subscription must have at least one active plan. To cancel a subscription, please "
            "use the cancel API endpoint on /v1/subscriptions.",
        )
    billing.update_subscription(
        ctx,
        item["subscription"],
        {"items": [{"id": item_id, "deleted": "true"}], **_item_change(params)},
    )
    return objects.deleted("subscription_item", item_id)


@route("GET", "/v1/subscription_items", "SubscriptionItemListParams")
def list_subscription_items(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    sub = required_object(ctx.account, params, "subscription", "subscription")
    subscription_id = sub["id"]
    items = billing.items_of(ctx.account, sub)
    return paginate(
        ctx.account,
        "subscription_item",
        params,
        f"/v1/subscription_items?subscription={subscription_id}",
        objects=items,
    )
