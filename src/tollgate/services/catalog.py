"""Catalog use cases: what `sync` would change in Stripe, and doing it.

With a database (issue 20), a sync also versions the plans (a plan whose prices or features
changed gets a new version, with its own Stripe prices; the earlier version's prices stay for
its subscribers) and stores the synced catalog, which every server process then loads
(services/catalog_live.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from sqlalchemy import Connection

from tollgate.db.queries import catalog_versions as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, Plan
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.catalog_sync import (
    ArchiveOneTimePrice,
    CatalogChange,
    CreateOneTimePrice,
    desired_credit_prices,
    desired_stripe_catalog,
    plan_catalog_changes,
    plan_credit_price_changes,
)
from tollgate.domain.coupon_sync import CouponChange, desired_coupons, plan_coupon_changes
from tollgate.domain.errors import CatalogError, CatalogProblem
from tollgate.domain.plan_versions import (
    PlanVersion,
    assign_plan_versions,
    plan_fingerprint,
    versioned_catalog,
)
from tollgate.stripe.gateway import StripeGateway


@dataclass(frozen=True)
class NewPlanVersion:
    """A plan whose prices or features changed: the sync makes it a new version."""

    kind: ClassVar[str] = "new_plan_version"
    plan: Plan
    earlier: Plan | None
    # Live subscribers per earlier version: they stay there until migrated.
    subscribers: Mapping[int, int]

    def describe(self) -> str:
        """Return one line for `tollgate catalog diff`."""
        line = f"+ plan {self.plan.id} v{self.plan.version}"
        if self.earlier is not None:
            line += f": {_terms_change(self.earlier, self.plan)}"
        if self.subscribers:
            staying = ", ".join(
                f"{count} on v{version}" for version, count in sorted(self.subscribers.items())
            )
            line += f"; subscribers stay where they are ({staying}) until migrated"
        else:
            line += "; no subscribers on earlier versions"
        return line


def _terms_change(old: Plan, new: Plan) -> str:
    def prices(plan: Plan) -> dict[tuple[str, str], str]:
        return {(p.interval, p.currency): f"{p.money.format()}/{p.interval}" for p in plan.prices}

    before, after = prices(old), prices(new)
    parts = [
        f"{before.get(key, 'none')} -> {after.get(key, 'none')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
    changed = sorted(
        feature
        for feature in set(old.features) | set(new.features)
        if old.features.get(feature) != new.features.get(feature)
    )
    if changed:
        parts.append(f"features changed: {', '.join(changed)}")
    return "; ".join(parts) or "terms changed"


AnyChange = CatalogChange | CreateOneTimePrice | ArchiveOneTimePrice | NewPlanVersion | CouponChange


def diff_catalog(
    *, catalog: Catalog, gateway: StripeGateway, db: Database | None = None
) -> list[AnyChange]:
    """The changes `sync_catalog` would make, without making them."""
    versions: list[AnyChange] = []
    if db is not None:
        with db.transaction() as session:
            catalog, new_versions = _versioned(session.connection(), catalog)
            versions = list(_version_changes(session.connection(), catalog, new_versions))
    products, prices, meters = gateway.catalog_state()
    changes = plan_catalog_changes(desired_stripe_catalog(catalog), products, prices, meters)
    return [
        *versions,
        *changes,
        *_credit_price_changes(catalog, gateway),
        *_coupon_changes(catalog, gateway),
    ]


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
    db: Database | None = None,
    now: datetime | None = None,
) -> list[AnyChange]:
    """Create or update Stripe's products, prices and meters to match the catalog; idempotent.

    `progress` is told of each change once made, with how many are done of how many planned.
    With `db` (and `now`), plans are versioned and the synced catalog is stored once Stripe
    holds it, for every server process to load. Syncs take turns (replicas started together
    with TOLLGATE_SYNC_CATALOG_ON_START each sync before they listen): two at once would give
    a changed plan the same new version twice, and the second could not store it.
    """
    if db is None:
        return _sync_stripe(catalog, gateway, progress)
    if catalog.source_json is None:
        raise CatalogError(
            [CatalogProblem("catalog", "has no source document to store (load it from a file)")]
        )
    if now is None:
        raise ValueError("sync_catalog with a database needs `now`")
    with db.taking_turns("catalog-sync") as turn:
        with turn.transaction() as session:
            catalog, new_versions = _versioned(session.connection(), catalog)
            versions: list[AnyChange] = [
                *_version_changes(session.connection(), catalog, new_versions)
            ]
        changes = _sync_stripe(catalog, gateway, progress)
        with turn.write_transaction() as session:
            _record(session.connection(), catalog, new_versions, now)
    return versions + changes


def _sync_stripe(
    catalog: Catalog,
    gateway: StripeGateway,
    progress: Callable[[AnyChange, int, int], None] | None,
) -> list[AnyChange]:
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
    coupon_changes = _coupon_changes(catalog, gateway)
    for coupon_change in coupon_changes:
        gateway.apply_coupon_change(coupon_change)
    return [*changes, *credit_changes, *coupon_changes]


def _coupon_changes(catalog: Catalog, gateway: StripeGateway) -> list[CouponChange]:
    if not catalog.coupons:
        return []  # no coupons in the catalog: never list (or delete) the account's
    desired = desired_coupons(catalog)
    return plan_coupon_changes(desired, gateway.coupons(), gateway.promotion_codes())


# -- versions (issue 20) ----------------------------------------------------------------------


def _versioned(connection: Connection, catalog: Catalog) -> tuple[Catalog, list[PlanVersion]]:
    """Return the catalog with plan versions assigned and earlier ones attached, and the new."""
    rows = queries.plan_version_rows(connection)
    history = [
        PlanVersion(row.plan, int(row.version), row.fingerprint, int(row.catalog_version))
        for row in rows
    ]
    earlier = earlier_plans(connection, history)
    versions, new = assign_plan_versions(catalog, history)
    return versioned_catalog(catalog, versions, earlier, catalog_version=catalog.version), new


def earlier_plans(connection: Connection, history: list[PlanVersion]) -> dict[str, dict[int, Plan]]:
    """Return each recorded plan version as the catalog that brought it defined it."""
    bodies = queries.catalog_bodies(
        connection, {item.catalog_version for item in history if item.catalog_version is not None}
    )
    parsed: dict[int, Catalog] = {}
    for number, body in bodies.items():
        try:
            parsed[number] = parse_catalog(json.loads(body))
        except (CatalogError, ValueError):
            continue  # a document this version can no longer read: its plans use the newest
    earlier: dict[str, dict[int, Plan]] = {}
    for item in history:
        source = parsed.get(item.catalog_version or 0)
        plan = source.plans.get(item.plan) if source is not None else None
        if plan is not None:
            earlier.setdefault(item.plan, {})[item.version] = plan
    return earlier


def _version_changes(
    connection: Connection, catalog: Catalog, new_versions: list[PlanVersion]
) -> list[NewPlanVersion]:
    # A plan's first version is news only as its product and prices (listed anyway).
    new_versions = [item for item in new_versions if item.version > 1]
    if not new_versions:
        return []
    counts = queries.subscribers_by_plan_version(connection)
    changes = []
    for item in new_versions:
        plan = catalog.plans[item.plan]
        older = catalog.plan_versions.get(item.plan, {})
        earlier = older[max(older)] if older else None
        subscribers = {
            version: count
            for (plan_id, version), count in counts.items()
            if plan_id == item.plan and count
        }
        changes.append(NewPlanVersion(plan, earlier, subscribers))
    return changes


def _record(
    connection: Connection, catalog: Catalog, new_versions: list[PlanVersion], now: datetime
) -> None:
    """Store the synced catalog unless the newest stored one is the same document (a sync
    that ran meanwhile stored it, with the plan versions it brings, which this one assigned
    alike)."""
    assert catalog.source_json is not None  # sync_catalog checked
    body = catalog.source_json
    digest = hashlib.sha256(body.encode()).hexdigest()
    plan_versions = {plan_id: plan.version for plan_id, plan in catalog.plans.items()}
    newest = queries.newest_version(connection)
    if newest is not None:
        row = queries.catalog_version(connection, newest)
        if row is not None and row.fingerprint == digest and row.plan_versions == plan_versions:
            return
    queries.record_catalog_version(
        connection,
        body=body,
        fingerprint=digest,
        plan_versions=plan_versions,
        new_plan_versions=[
            (item.plan, item.version, plan_fingerprint(catalog.plans[item.plan]))
            for item in new_versions
        ],
        source=None,
        now=now,
    )
