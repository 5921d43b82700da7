"""What every write reads before it asks Stripe, and the item changes it asks for.

The customer (its Stripe id, account and billing currency), the catalog's price ids and
terms, and the `items` update that moves a subscription to new terms. Its newest live
subscription as Stripe has it (the mirror may be a webhook behind) is
`services.customers.live_subscription`, which add-ons and discounts read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import InvalidRequest, TollgateError
from tollgate.domain.events import SubscriptionSnapshot
from tollgate.domain.subscriptions import Terms, subscription_terms
from tollgate.services.customers import billing_currency, load_customer, stripe_customer
from tollgate.stripe.errors import StripeNotFound
from tollgate.stripe.gateway import StripeGateway


class CatalogNotSynced(TollgateError):
    """Stripe lacks a price the catalog has: `tollgate catalog sync` has not run."""

    type = "catalog_not_synced"
    status = 503


@dataclass(frozen=True)
class OnlineCustomer:
    """What a write needs of the customer, read in one short transaction."""

    id: str
    stripe_id: str
    account: str | None
    currency: str
    state_version: int
    debit_processing: bool = False  # a bank debit of theirs is on its way (not an action)
    address: Mapping[str, Any] | None = None  # the billing address automatic tax goes by


def online_customer(
    db: Database, catalog: Catalog, gateway: StripeGateway | None, customer_id: str
) -> tuple[OnlineCustomer, StripeGateway]:
    with db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, target = stripe_customer(row, gateway)
        currency = billing_currency(session, row, catalog)
        found = OnlineCustomer(
            row.id,
            stripe_id,
            row.stripe_account,
            currency,
            row.state_version,
            debit_processing=row.processing_access is not None,
            address=row.address,
        )
    return found, target


def price_ids(gateway: StripeGateway, keys: list[str]) -> dict[str, str]:
    try:
        return gateway.price_ids(keys)
    except StripeNotFound as error:
        raise CatalogNotSynced(error.message) from error


def application_fee(settings: Settings, customer: OnlineCustomer) -> Decimal | None:
    """Return the platform's fee percent for a connected account's subscription, else None."""
    return settings.application_fee_percent if customer.account else None


def terms_for(
    catalog: Catalog, customer: OnlineCustomer, plan_id: str, interval: str, seats: int | None
) -> Terms:
    return subscription_terms(
        catalog, plan_id=plan_id, interval=interval, currency=customer.currency, seats=seats
    )


def current_amount(catalog: Catalog, current: SubscriptionSnapshot) -> int | None:
    """Return the catalog's unit amount of the subscription's plan price, if it still has it."""
    if current.plan not in catalog.plans:
        return None
    plan = catalog.plan_version(current.plan or "", current.plan_version)
    if plan.is_free or current.interval is None or current.currency is None:
        return None
    try:
        return plan.price_for(current.interval, current.currency).amount_minor
    except InvalidRequest:
        return None


def item_changes(
    gateway: StripeGateway, current: SubscriptionSnapshot, terms: Terms
) -> dict[str, Any]:
    """Return the `items` update that moves the subscription to `terms`."""
    base = current.base_item
    assert base is not None
    wanted_keys = [terms.lookup_key, *terms.overage_lookup_keys.values()]
    prices = price_ids(gateway, wanted_keys)
    items: list[dict[str, Any]] = []
    base_change: dict[str, Any] = {"id": base.id, "quantity": terms.quantity}
    if base.price_id != prices[terms.lookup_key]:
        base_change["price"] = prices[terms.lookup_key]
    items.append(base_change)
    kept = {item.price_id for item in current.items}
    wanted_overage = {prices[key] for key in terms.overage_lookup_keys.values()}
    for item in current.items:
        if item.id != base.id and item.price_id not in wanted_overage:
            items.append({"id": item.id, "deleted": True})
    items += [{"price": price} for price in sorted(wanted_overage - kept)]
    return {"items": items}
