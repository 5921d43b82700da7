"""Usage alerts: thresholds a customer (or the operator) sets per feature, in units, percent of
the included quantity, or money (overage), each firing once a period.

A batch that moves a counter checks the customer's alerts in its own transaction: an alert
whose usage mark the counter has reached fires when its (alert, period) row is new, so
concurrent batches crossing it together fire it once; the app webhook `usage.alert` and the
email are queued in the same transaction. An alert set below the usage already reached fires
when it is set.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, FeatureType
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.domain.metering import ALERT_KINDS, alert_units
from tollgate.domain.wording import UnitName
from tollgate.money import format_minor
from tollgate.services import outbox
from tollgate.services.deps import Deps
from tollgate.services.entitlements import load_billing_customers, period_usage
from tollgate.services.usage.counters import Tally, granted


@dataclass(frozen=True)
class AlertView:
    id: str
    customer: str
    feature: str
    kind: str
    threshold: int
    created_at: datetime
    fired: bool = False  # it fired when it was set (usage was past it already)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": self.customer,
            "feature": self.feature,
            "kind": self.kind,
            "threshold": self.threshold,
            "created": self.created_at.isoformat(),
            "fired": self.fired,
        }


def record_alerts(
    connection: Connection, catalog: Catalog, tallies: Iterable[Tally], now: datetime
) -> int:
    """Fire each alert the moved counters reached that did not fire this period; return how
    many fired."""
    moved = {(tally.customer.id, tally.meter): tally for tally in tallies if tally.alerts}
    if not moved:
        return 0
    fired = 0
    for row in queries.alerts_of(connection, sorted({customer for customer, _ in moved})):
        tally = moved.get((row.customer_id, row.feature))
        if tally is not None and _fire(connection, catalog, row, tally, now):
            fired += 1
    return fired


def _fire(connection: Connection, catalog: Catalog, row: Any, tally: Tally, now: datetime) -> bool:
    mark = alert_units(row.kind, int(row.threshold), tally.grant, tally.customer.currency)
    used = tally.counter.value
    if mark is None or used < mark:
        return False
    if not queries.insert_firing(connection, row.id, tally.period.start, used, now):
        return False  # fired before this period
    facts = _facts(catalog, row, tally, mark)
    cause = f"alert:{row.id}:{tally.period.start.isoformat()}"
    outbox.queue_app_event(
        connection,
        event_type="usage.alert",
        customer_id=row.customer_id,
        data=facts,
        cause=cause,
        now=now,
    )
    outbox.queue_email(
        connection,
        customer_id=row.customer_id,
        template="usage_alert",
        cause=cause,
        facts=facts,
        now=now,
    )
    return True


def _facts(catalog: Catalog, row: Any, tally: Tally, mark: int) -> dict[str, Any]:
    feature = catalog.features[row.feature]
    unit = UnitName(feature.unit or feature.name.lower())
    threshold = int(row.threshold)
    if row.kind == "money":
        text = f"{format_minor(threshold, tally.customer.currency)} of overage"
    elif row.kind == "percent":
        text = f"{threshold} % of the included {unit(2)}"
    else:
        text = f"{threshold:,} {unit(threshold)}"
    return {
        "alert": row.id,
        "feature": row.feature,
        "feature_name": feature.name,
        "units": unit(2),
        "kind": row.kind,
        "threshold": threshold,
        "threshold_text": text,
        "threshold_units": mark,
        "used": tally.counter.value,
        "included": tally.grant.included,
        "plan": tally.customer.plan,
        "period_start": tally.period.start.isoformat(),
        "period_end": tally.period.end.isoformat(),
    }


# -- the use cases ---------------------------------------------------------------------------


def create_alert(
    deps: Deps,
    *,
    customer_id: str,
    feature: str,
    kind: str,
    threshold: Any,
    alert_id: str | None,
) -> AlertView:
    """Set an alert; it fires at once when usage is past it already."""
    db, catalog, clock, grace = deps.db, deps.catalog, deps.clock, deps.grace
    known = catalog.features.get(feature)
    if known is None or known.type is not FeatureType.METERED:
        raise InvalidRequest(f"unknown metered feature {feature!r}", param="feature")
    if kind not in ALERT_KINDS:
        raise InvalidRequest(f"kind must be one of: {', '.join(ALERT_KINDS)}", param="kind")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise InvalidRequest("threshold must be a whole number, 1 or more", param="threshold")
    if kind == "percent" and threshold > 10_000:
        raise InvalidRequest("a percent threshold is at most 10,000", param="threshold")
    new_id = alert_id or f"alert_{secrets.token_hex(8)}"
    now = clock.now()
    with db.write_connection() as connection:
        customer = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        grant = granted(catalog, customer, now, grace)[feature]
        if kind == "money" and alert_units(kind, threshold, grant, customer.currency) is None:
            raise InvalidRequest(
                f"{known.name} has no priced overage on the customer's plan: a money alert "
                "could never fire",
                param="kind",
            )
        row = {
            "id": new_id,
            "customer_id": customer_id,
            "feature": feature,
            "kind": kind,
            "threshold": threshold,
            "created_at": now,
        }
        if not queries.insert_alert(connection, row):
            found = queries.alert(connection, new_id)
            wanted = (customer_id, feature, kind, threshold)
            if (
                found is None
                or (
                    found.customer_id,
                    found.feature,
                    found.kind,
                    int(found.threshold),
                )
                != wanted
            ):
                raise Conflict(f"alert {new_id!r} exists with other settings", param="id")
            return _view(found)
        tally = Tally(
            customer=customer,
            period=customer.period,
            meter=feature,
            aggregation=known.aggregation,
            grant=grant,
            limit=None,
        )
        tally.counter.value = period_usage(connection, customer_id, customer.period).get(feature, 0)
        made = queries.AlertRow(new_id, customer_id, feature, kind, threshold, now)
        fired = _fire(connection, catalog, made, tally, now)
    return AlertView(new_id, customer_id, feature, kind, threshold, now, fired)


def list_alerts(*, db: Database, customer_id: str) -> list[AlertView]:
    with db.engine.connect() as connection:
        rows = queries.alerts_of(connection, [customer_id])
        connection.rollback()
    return [_view(row) for row in rows]


def delete_alert(*, db: Database, customer_id: str, alert_id: str) -> None:
    with db.write_connection() as connection:
        found = queries.alert(connection, alert_id)
        if found is None or found.customer_id != customer_id:
            raise NotFound(f"no alert {alert_id!r} of {customer_id!r}", param="alert_id")
        queries.delete_alert(connection, alert_id)


def _view(row: Any) -> AlertView:
    return AlertView(
        row.id, row.customer_id, row.feature, row.kind, int(row.threshold), row.created_at
    )
