"""Catalog use cases: what `sync` would change in Stripe, and doing it."""

from __future__ import annotations

from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_sync import (
    CatalogChange,
    desired_stripe_catalog,
    plan_catalog_changes,
)
from tollgate.stripe.gateway import StripeGateway


def diff_catalog(*, catalog: Catalog, gateway: StripeGateway) -> list[CatalogChange]:
    """The changes `sync_catalog` would make, without making them."""
    products, prices, meters = gateway.catalog_state()
    return plan_catalog_changes(desired_stripe_catalog(catalog), products, prices, meters)


def sync_catalog(*, catalog: Catalog, gateway: StripeGateway) -> list[CatalogChange]:
    """Create or update Stripe's products, prices and meters to match the catalog; idempotent."""
    products, prices, meters = gateway.catalog_state()
    changes = plan_catalog_changes(desired_stripe_catalog(catalog), products, prices, meters)
    meter_ids = {meter.event_name: meter.id for meter in meters if meter.status == "active"}
    for change in changes:
        gateway.apply_catalog_change(change, meter_ids)
    return changes
