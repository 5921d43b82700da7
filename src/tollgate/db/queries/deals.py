"""Per-customer deals (issue 20): overrides and one-off usage grants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from tollgate.db.tables import CUSTOMER_OVERRIDES, SUBSCRIPTION_ITEMS, USAGE_GRANTS
from tollgate.domain.catalog_sync import ADDON_LOOKUP_PREFIX, addon_of_lookup_key
from tollgate.domain.deals import Deals, FeatureOverride


def _override(row: Any) -> FeatureOverride:
    return FeatureOverride(
        feature=row.feature,
        enabled=row.enabled,
        limit=row.limit_value,
        unlimited=bool(row.unlimited),
        ends_at=row.ends_at,
    )


def deals_of(
    connection: Connection,
    customer_ids: Sequence[str],
    now: datetime,
    live_subscriptions: Mapping[str, str] | None = None,
) -> dict[str, Deals]:
    """Return the deals of those customers that have any: overrides not yet ended, the usage
    granted for a period that contains `now`, and the add-ons on their live subscription
    (`live_subscriptions`: subscription id by customer)."""
    overrides: dict[str, list[FeatureOverride]] = {}
    grants: dict[str, dict[str, int]] = {}
    addons = _addon_quantities(connection, live_subscriptions or {})
    for start in range(0, len(customer_ids), 500):
        chunk = list(customer_ids[start : start + 500])
        rows = connection.execute(
            select(CUSTOMER_OVERRIDES).where(CUSTOMER_OVERRIDES.c.customer_id.in_(chunk))
        )
        for row in rows:
            override = _override(row)
            if override.active(now):
                overrides.setdefault(row.customer_id, []).append(override)
        granted = connection.execute(
            select(
                USAGE_GRANTS.c.customer_id,
                USAGE_GRANTS.c.feature,
                func.sum(USAGE_GRANTS.c.quantity),
            )
            .where(USAGE_GRANTS.c.customer_id.in_(chunk))
            .where(USAGE_GRANTS.c.period_start <= now, USAGE_GRANTS.c.period_end > now)
            .group_by(USAGE_GRANTS.c.customer_id, USAGE_GRANTS.c.feature)
        )
        for customer_id, feature, quantity in granted:
            grants.setdefault(customer_id, {})[feature] = int(quantity)
    return {
        customer_id: Deals(
            tuple(overrides.get(customer_id, ())),
            grants.get(customer_id, {}),
            addons.get(customer_id, {}),
        )
        for customer_id in sorted(set(overrides) | set(grants) | set(addons))
    }


def _addon_quantities(
    connection: Connection, live_subscriptions: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Return each customer's add-on quantities, from its live subscription's items."""
    by_subscription = {sub: customer for customer, sub in live_subscriptions.items()}
    found: dict[str, dict[str, int]] = {}
    ids = sorted(by_subscription)
    for start in range(0, len(ids), 500):
        rows = connection.execute(
            select(
                SUBSCRIPTION_ITEMS.c.subscription_id,
                SUBSCRIPTION_ITEMS.c.lookup_key,
                SUBSCRIPTION_ITEMS.c.quantity,
            )
            .where(SUBSCRIPTION_ITEMS.c.subscription_id.in_(ids[start : start + 500]))
            .where(SUBSCRIPTION_ITEMS.c.lookup_key.like(f"{ADDON_LOOKUP_PREFIX}%"))
        )
        for subscription_id, lookup_key, quantity in rows:
            addon = addon_of_lookup_key(lookup_key)
            if addon is not None:
                customer = found.setdefault(by_subscription[subscription_id], {})
                customer[addon] = customer.get(addon, 0) + int(quantity or 1)
    return found


def override(connection: Connection, customer_id: str, feature: str) -> FeatureOverride | None:
    """Return the customer's override of a feature, ended or not."""
    row = connection.execute(
        select(CUSTOMER_OVERRIDES)
        .where(CUSTOMER_OVERRIDES.c.customer_id == customer_id)
        .where(CUSTOMER_OVERRIDES.c.feature == feature)
    ).first()
    return _override(row) if row is not None else None


def overrides(connection: Connection, customer_id: str) -> list[FeatureOverride]:
    """Return every override of the customer, ended ones too, by feature."""
    rows = connection.execute(
        select(CUSTOMER_OVERRIDES)
        .where(CUSTOMER_OVERRIDES.c.customer_id == customer_id)
        .order_by(CUSTOMER_OVERRIDES.c.feature)
    )
    return [_override(row) for row in rows]


def put_override(
    connection: Connection, customer_id: str, value: FeatureOverride, *, actor: str, now: datetime
) -> None:
    """Set the customer's override of a feature (replacing any)."""
    values = {
        "enabled": value.enabled,
        "limit_value": value.limit,
        "unlimited": value.unlimited,
        "ends_at": value.ends_at,
        "actor": actor,
        "updated_at": now,
    }
    changed = connection.execute(
        update(CUSTOMER_OVERRIDES)
        .where(CUSTOMER_OVERRIDES.c.customer_id == customer_id)
        .where(CUSTOMER_OVERRIDES.c.feature == value.feature)
        .values(**values)
    )
    if not changed.rowcount:
        connection.execute(
            insert(CUSTOMER_OVERRIDES).values(
                customer_id=customer_id, feature=value.feature, created_at=now, **values
            )
        )


def delete_override(connection: Connection, customer_id: str, feature: str) -> bool:
    """Remove the customer's override of a feature; return whether there was one."""
    result = connection.execute(
        delete(CUSTOMER_OVERRIDES)
        .where(CUSTOMER_OVERRIDES.c.customer_id == customer_id)
        .where(CUSTOMER_OVERRIDES.c.feature == feature)
    )
    return bool(result.rowcount)


def grant_by_key(connection: Connection, customer_id: str, idempotency_key: str) -> Any | None:
    """Return the usage grant made under this key, if any."""
    return connection.execute(
        select(USAGE_GRANTS)
        .where(USAGE_GRANTS.c.customer_id == customer_id)
        .where(USAGE_GRANTS.c.idempotency_key == idempotency_key)
    ).first()


def insert_grant(connection: Connection, row: dict[str, Any]) -> None:
    """Store one usage grant."""
    connection.execute(insert(USAGE_GRANTS).values(**row))
