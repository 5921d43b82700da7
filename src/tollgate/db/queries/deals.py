"""Per-customer deals (issue 20): overrides and one-off usage grants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    String,
    bindparam,
    cast,
    delete,
    literal,
    null,
    select,
    union_all,
)

from tollgate.db.dialects import DIALECTS, insert_if_new, json_array, select_among, upsert
from tollgate.db.execution import named_row, read_rows
from tollgate.db.tables import CUSTOMER_OVERRIDES, SPEND_CAPS, SUBSCRIPTION_ITEMS, USAGE_GRANTS
from tollgate.db.types import UTCDateTime
from tollgate.domain.catalog_sync import ADDON_LOOKUP_PREFIX, addon_of_lookup_key
from tollgate.domain.deals import Deals, FeatureOverride


class DealRow(NamedTuple):
    """A row of the deals statement (the columns of `_deal_part`, in their order): a named
    tuple, as a Row's attribute costs a failed lookup on its class first."""

    kind: str  # o: an override, g: a grant, a: an add-on item, c: a spend cap
    owner: str  # the customer (the subscription for an add-on item)
    feature: Any  # the feature (str; the item's lookup key for an add-on; None for a cap)
    enabled: bool | None  # an override's four columns (None in the other kinds)
    limit_value: int | None
    unlimited: bool | None
    ends_at: datetime | None
    quantity: Any  # a grant's units, an item's quantity, a cap's minor units (None otherwise)


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
    spend_caps: dict[str, int] | None = None,
) -> dict[str, Deals]:
    """Return the deals of those customers that have any: overrides not yet ended, the usage
    granted for a period that contains `now`, and the add-ons on their live subscription
    (`live_subscriptions`: subscription id by customer). Given `spend_caps`, fill it with the
    customers' spend caps too (minor units, where set), read by the same statement.

    One statement per 500 customers (the kinds in a UNION ALL), on the driver's cursor
    (`read_rows`): this runs on every entitlement load and usage batch, where each round trip
    counts.
    """
    overrides: dict[str, list[FeatureOverride]] = {}
    grants: dict[str, dict[str, int]] = {}
    addons: dict[str, dict[str, int]] = {}
    customer_of = {sub: customer for customer, sub in (live_subscriptions or {}).items()}
    for start in range(0, len(customer_ids), 500):
        chunk = list(customer_ids[start : start + 500])
        members = set(chunk)
        subscriptions = sorted(sub for sub, owner in customer_of.items() if owner in members)
        statement, parameters = _deals_statement(
            connection.dialect.name, chunk, subscriptions, now, spend_caps is not None
        )
        for found in read_rows(connection, statement, parameters):
            row = named_row(DealRow, found)
            if row.kind == "c":
                assert spend_caps is not None  # asked for only then
                spend_caps[row.owner] = int(row.quantity)
            elif row.kind == "o":
                override = _override(row)
                if override.active(now):
                    overrides.setdefault(row.owner, []).append(override)
            elif row.kind == "g":
                held = grants.setdefault(row.owner, {})
                held[row.feature] = held.get(row.feature, 0) + int(row.quantity)
            else:
                addon = addon_of_lookup_key(row.feature)
                if addon is not None:
                    bought = addons.setdefault(customer_of[row.owner], {})
                    bought[addon] = bought.get(addon, 0) + int(row.quantity or 1)
    return {
        customer_id: Deals(
            tuple(overrides.get(customer_id, ())),
            grants.get(customer_id, {}),
            addons.get(customer_id, {}),
        )
        for customer_id in sorted(set(overrides) | set(grants) | set(addons))
    }


def _deals_statement(
    dialect: str, customers: list[str], subscriptions: list[str], now: datetime, caps: bool
) -> Any:
    """The statement and its parameters (built once: this runs on every entitlement load)."""
    statement = _STATEMENTS[dialect][bool(subscriptions), caps]
    params = {"customers": json_array(customers), "now": now}
    if not subscriptions:
        return statement, params
    return statement, {**params, "subscriptions": json_array(subscriptions)}


def _deal_part(kind: str, owner: Any, feature: Any, *, quantity: Any, **override: Any) -> Any:
    """One part of the UNION ALL: the override columns where given, typed NULLs elsewhere."""
    return select(
        literal(kind).label("kind"),
        owner.label("owner"),
        feature.label("feature"),
        override.get("enabled", cast(null(), Boolean)).label("enabled"),
        override.get("limit_value", cast(null(), BigInteger)).label("limit_value"),
        override.get("unlimited", cast(null(), Boolean)).label("unlimited"),
        override.get("ends_at", cast(null(), UTCDateTime())).label("ends_at"),
        quantity.label("quantity"),
    )


_o, _g, _i = CUSTOMER_OVERRIDES.c, USAGE_GRANTS.c, SUBSCRIPTION_ITEMS.c


def _deal_statements(dialect: str) -> dict[tuple[bool, bool], Any]:
    """The UNION ALL by (with the add-ons, with the spend caps), for one dialect."""
    overrides = select_among(
        dialect,
        _deal_part(
            "o",
            _o.customer_id,
            _o.feature,
            quantity=cast(null(), BigInteger),
            enabled=_o.enabled,
            limit_value=_o.limit_value,
            unlimited=_o.unlimited,
            ends_at=_o.ends_at,
        ),
        CUSTOMER_OVERRIDES,
        _o.customer_id,
        "customers",
    )
    grants = select_among(
        dialect,
        _deal_part("g", _g.customer_id, _g.feature, quantity=_g.quantity).where(
            _g.period_start <= bindparam("now", type_=UTCDateTime()),
            _g.period_end > bindparam("now", type_=UTCDateTime()),
        ),
        USAGE_GRANTS,
        _g.customer_id,
        "customers",
    )
    addons = select_among(
        dialect,
        _deal_part(
            "a", _i.subscription_id, _i.lookup_key, quantity=cast(_i.quantity, BigInteger)
        ).where(_i.lookup_key.like(f"{ADDON_LOOKUP_PREFIX}%")),
        SUBSCRIPTION_ITEMS,
        _i.subscription_id,
        "subscriptions",
    )
    caps = select_among(
        dialect,
        _deal_part(
            "c", SPEND_CAPS.c.customer_id, cast(null(), String), quantity=SPEND_CAPS.c.amount_minor
        ),
        SPEND_CAPS,
        SPEND_CAPS.c.customer_id,
        "customers",
    )
    return {
        (False, False): union_all(overrides, grants),
        (True, False): union_all(overrides, grants, addons),
        (False, True): union_all(overrides, grants, caps),
        (True, True): union_all(overrides, grants, addons, caps),
    }


_STATEMENTS = {dialect: _deal_statements(dialect) for dialect in DIALECTS}


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
    row = {
        "customer_id": customer_id,
        "feature": value.feature,
        "enabled": value.enabled,
        "limit_value": value.limit,
        "unlimited": value.unlimited,
        "ends_at": value.ends_at,
        "actor": actor,
        "created_at": now,
        "updated_at": now,
    }
    replace = ("enabled", "limit_value", "unlimited", "ends_at", "actor", "updated_at")
    statement = upsert(
        connection, CUSTOMER_OVERRIDES, index_elements=("customer_id", "feature"), update=replace
    )
    connection.execute(statement, row)


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


def insert_grant(connection: Connection, row: dict[str, Any]) -> bool:
    """Store one usage grant; False when its idempotency key is already stored (a request
    made at the same moment stored it first)."""
    statement = insert_if_new(
        connection,
        USAGE_GRANTS,
        index_elements=("customer_id", "idempotency_key"),
        returning=("id",),
    )
    return connection.execute(statement, row).first() is not None
