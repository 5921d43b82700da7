"""Buying add-ons (issue 20): an add-on is its own item on the customer's live subscription.

Its price is the catalog's for the subscription's interval and currency; the quantity is how many
units are bought (each adds what the add-on grants). Entitlements read the items from the
mirror, so they change when Stripe's `customer.subscription.updated` arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from tollgate.db.models import SubscriptionItem
from tollgate.db.queries.audit import record_audit
from tollgate.domain.catalog import AddOn, PlanPrice
from tollgate.domain.catalog_sync import addon_of_lookup_key, addon_price_lookup_key
from tollgate.domain.errors import Conflict, InvalidRequest
from tollgate.domain.subscriptions import is_live
from tollgate.services.customers import (
    current_subscription,
    live_subscription,
    load_customer,
    stripe_customer,
)
from tollgate.services.deps import Deps


@dataclass(frozen=True)
class AddOnView:
    """An add-on on a customer's subscription."""

    customer_id: str
    addon: str
    quantity: int
    subscription_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "addon": self.addon,
            "quantity": self.quantity,
            "subscription": self.subscription_id,
        }


@dataclass(frozen=True)
class AddOnOffer:
    """An add-on the customer's plan allows, its price in the subscription's terms, and how
    many units the customer holds (as the mirror last saw them)."""

    addon: AddOn
    price: PlanPrice
    quantity: int

    @property
    def most(self) -> int | None:
        return self.addon.max_quantity

    def to_json(self) -> dict[str, Any]:
        return {
            "addon": self.addon.id,
            "name": self.addon.name,
            "price": {"amount": self.price.amount_minor, "currency": self.price.currency},
            "interval": str(self.price.interval),
            "grants": self.addon.grants,
            "quantity": self.quantity,
            "max_quantity": self.addon.max_quantity,
        }


def list_addons(
    deps: Deps,
    *,
    customer_id: str,
) -> list[AddOnOffer]:
    """Return the add-ons the customer may buy with its live subscription, with what it holds.

    None without a live subscription: an add-on is an item on one.
    """
    db, catalog = deps.db, deps.catalog
    with db.transaction() as session:
        load_customer(session, customer_id)
        subscription = current_subscription(session, customer_id)
        if subscription is None or not is_live(subscription.status):
            return []
        items = session.scalars(
            select(SubscriptionItem).where(SubscriptionItem.subscription_id == subscription.id)
        ).all()
        plan, interval = subscription.plan, subscription.interval or ""
        currency = subscription.currency or ""
    held: dict[str, int] = {}
    for item in items:
        addon_id = addon_of_lookup_key(item.lookup_key)
        if addon_id is not None:
            held[addon_id] = held.get(addon_id, 0) + (item.quantity or 1)
    offers = []
    for addon in catalog.addons.values():
        price = addon.price_for(interval, currency)
        allowed = not addon.plans or plan in addon.plans
        if price is not None and (allowed or held.get(addon.id)):
            offers.append(AddOnOffer(addon, price, held.get(addon.id, 0)))
    return offers


def set_addon(
    deps: Deps,
    *,
    customer_id: str,
    addon_id: str,
    quantity: int,
    actor: str,
) -> AddOnView:
    """Set how many units of an add-on the customer's subscription carries (0 removes it)."""
    db = deps.db
    catalog = deps.catalog
    gateway = deps.optional_stripe()
    settings = deps.settings
    clock = deps.clock
    addon = catalog.addons.get(addon_id)
    if addon is None:
        known = ", ".join(sorted(catalog.addons)) or "none"
        raise InvalidRequest(f"unknown add-on {addon_id!r} (add-ons are: {known})", param="addon")
    if quantity < 0 or (addon.max_quantity is not None and quantity > addon.max_quantity):
        most = addon.max_quantity if addon.max_quantity is not None else "any number"
        raise InvalidRequest(f"quantity must be 0 to {most}", param="quantity")
    with db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, target = stripe_customer(row, gateway)
        version = row.state_version
    subscription = live_subscription(target, stripe_id)
    if subscription is None:
        raise Conflict(f"customer {customer_id!r} has no live subscription", param="id")
    if addon.plans and subscription.plan not in addon.plans:
        raise InvalidRequest(
            f"add-on {addon.id!r} is sold with {', '.join(addon.plans)}, not {subscription.plan}",
            param="addon",
        )
    interval, currency = subscription.interval or "", subscription.currency or ""
    if addon.price_for(interval, currency) is None:
        raise InvalidRequest(
            f"add-on {addon.id!r} has no {interval} price in {currency}", param="addon"
        )
    held = next(
        (i for i in subscription.items if addon_of_lookup_key(i.lookup_key) == addon.id), None
    )
    holding = (held.quantity or 1) if held is not None else 0
    if holding == quantity:
        # Already so (a repeat, maybe of a request still answering): sending the change again
        # under the same key, now as an item update, would be refused as another request.
        return AddOnView(customer_id, addon.id, quantity, subscription.id)
    if held is not None and quantity == 0:
        items: list[dict[str, Any]] = [{"id": held.id, "deleted": True}]
    elif held is not None:
        items = [{"id": held.id, "quantity": quantity}]
    else:
        price = target.price_id(addon_price_lookup_key(addon.id, interval, currency))
        items = [{"price": price, "quantity": quantity}]
    key = f"addon-{customer_id}-{addon.id}-{quantity}-{version}"
    target.update_subscription(
        subscription.id,
        idempotency_key=key,
        params={"items": items, "proration_behavior": settings.immediate_proration_behavior},
    )
    with db.transaction() as session:
        record_audit(
            session.connection(),
            actor=actor,
            object_type="addon",
            object_id=f"{customer_id}/{addon.id}",
            action="updated",
            before={"quantity": held.quantity if held is not None else 0},
            after={"quantity": quantity},
            now=clock.now(),
            once=key,  # repeats sent at once all reach here: one row
        )
    return AddOnView(customer_id, addon.id, quantity, subscription.id)
