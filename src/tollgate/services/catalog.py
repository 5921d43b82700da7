"""Catalog use cases: what `sync` would change in Stripe, and doing it."""

from __future__ import annotations

from collections.abc import Callable

from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_sync import (
    ArchiveOneTimePrice,
    CatalogChange,
    CreateOneTimePrice,
    desired_credit_prices,
    desired_stripe_catalog,
    plan_catalog_changes,
    plan_credit_price_changes,
)
from tollgate.stripe.gateway import StripeGateway

AnyChange = CatalogChange | CreateOneTimePrice | ArchiveOneTimePrice


def diff_catalog(*, catalog: Catalog, gateway: StripeGateway) -> list[AnyChange]:
    """The changes `sync_catalog` would make, without making them."""
    products, prices, meters = gateway.catalog_state()
    changes = plan_catalog_changes(desired_stripe_catalog(catalog), products, prices, meters)
    return changes + _credit_price_changes(catalog, gateway)


def _credit_price_changes(
    catalog: Catalog, gateway: StripeGateway
) -> list[CreateOneTimePrice | ArchiveOneTimePrice]:
    desired = desired_credit_prices(catalog)
    return plan_credit_price_changes(desired, gateway.one_time_prices())


def _apply_credit_price_change(
    gateway: StripeGateway, change: CreateOneTimePrice | ArchiveOneTimePrice
) -> None:
    if isinstance(change, ArchiveOneTimePrice):
        gateway.archive_price(change.price_id)
        return
    price = change.price
    gateway.create_one_time_price(
        lookup_key=price.lookup_key,
        product=price.product,
        currency=price.currency,
        unit_amount=price.unit_amount,
        nickname=price.nickname,
        metadata=price.metadata,
    )
    if change.replaces:
        gateway.archive_price(change.replaces)


def sync_catalog(
    *,
    catalog: Catalog,
    gateway: StripeGateway,
    progress: Callable[[AnyChange, int, int], None] | None = None,
) -> list[AnyChange]:
    """Create or update Stripe's products, prices and meters to match the catalog; idempotent.

    `progress` is told of each change once made, with how many are done of how many planned.
    """
    products, prices, meters = gateway.catalog_state()
    changes = plan_catalog_changes(desired_stripe_catalog(catalog), products, prices, meters)
    meter_ids = {meter.event_name: meter.id for meter in meters if meter.status == "active"}
    for done, change in enumerate(changes, 1):
        gateway.apply_catalog_change(change, meter_ids)
        if progress is not None:
            progress(change, done, len(changes))
    credit_changes = _credit_price_changes(catalog, gateway)
    for done, credit_change in enumerate(credit_changes, len(changes) + 1):
        _apply_credit_price_change(gateway, credit_change)
        if progress is not None:
            progress(credit_change, done, len(changes) + len(credit_changes))
    return changes + credit_changes
