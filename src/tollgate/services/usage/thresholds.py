"""Warning levels usage reached: recorded once a period, each with its email and app webhook."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from tollgate.db.queries import usage as queries
from tollgate.db.queries.changes import feed_rows
from tollgate.db.tables import CUSTOMER_CHANGES
from tollgate.domain.catalog import Catalog
from tollgate.domain.entitlements import upgrade_plan
from tollgate.domain.metering import overage_minor, overage_units, projected_usage, thresholds_due
from tollgate.domain.wording import UnitName, overage_rate_text
from tollgate.services import outbox
from tollgate.services.usage.counters import Tally


def record_thresholds(
    connection: Connection, catalog: Catalog, tallies: Iterable[Tally], now: datetime
) -> int:
    """Record each warning level the counters reached that is not known to be recorded, and
    queue its notices; return how many were new this period.

    A level is due when the counter's value reaches it and it is above `warned`, the highest
    level known to be recorded (Redis's counters: so a batch that crossed a level and then
    failed does not leave it unrecorded; the insert ignores a repeat), or, where that is not
    known, when the batch crossed it (the database's counters). Each tally's `warned` is raised
    to what it recorded.
    """
    new = 0
    changed: set[str] = set()
    for tally in tallies:
        due = thresholds_due(tally.grant, tally.before, tally.counter.value, tally.warned)
        if not due:
            continue
        customer = tally.customer
        for percent in due:
            if not queries.insert_threshold(
                connection,
                customer_id=customer.id,
                meter=tally.meter,
                period_start=tally.period.start,
                percent=percent,
                used=tally.counter.value,
                crossed_at=now,
            ):
                continue  # crossed before in this period (a `last` meter going down and up again)
            new += 1
            changed.add(customer.id)
            _queue_notices(connection, catalog, tally, percent, now)
        tally.warned = max(due)
    if changed:
        # A crossing can flip a decision (a hard limit reached): every process drops its cache.
        connection.execute(
            insert(CUSTOMER_CHANGES), feed_rows(sorted(changed), reason="threshold", now=now)
        )
    return new


def _queue_notices(
    connection: Connection, catalog: Catalog, tally: Tally, percent: int, now: datetime
) -> None:
    facts = threshold_facts(catalog, tally, percent, now)
    cause = f"{tally.meter}:{tally.period.start.isoformat()}:{percent}"
    outbox.queue_email(
        connection,
        customer_id=tally.customer.id,
        template="usage_exceeded" if percent >= 100 else "usage_warning",
        cause=cause,
        facts=facts,
        now=now,
    )
    outbox.queue_app_event(
        connection,
        event_type="customer.usage_threshold_crossed",
        customer_id=tally.customer.id,
        data=facts,
        cause=cause,
        now=now,
    )


def threshold_facts(
    catalog: Catalog, tally: Tally, percent: int, now: datetime | None = None
) -> dict[str, Any]:
    """Return what a usage warning says: the feature, how much is used of how much, what
    happens past the included quantity (blocked, and which plan has room; or the overage rate
    and what it comes to by the period's end at the pace so far)."""
    feature = catalog.features[tally.meter]
    grant = tally.grant
    customer = tally.customer
    unit = UnitName(feature.unit or feature.name.lower())
    used = tally.counter.value
    facts: dict[str, Any] = {
        "feature": tally.meter,
        "feature_name": feature.name,
        "unit": feature.unit,
        "units": unit(2),
        "percent": percent,
        "used": used,
        "included": grant.included,
        "hard_limit": grant.hard,
        "plan": customer.plan,
        "period_start": tally.period.start.isoformat(),
        "period_end": tally.period.end.isoformat(),
    }
    if grant.hard:
        upgrade = upgrade_plan(catalog, customer.plan, tally.meter, used + 1)
        facts["upgrade_plan"] = upgrade.id if upgrade else None
        facts["upgrade_plan_name"] = upgrade.name if upgrade else None
    if grant.overage is not None:
        try:
            amount = grant.overage.amount_in(customer.currency)
        except KeyError:
            amount = None
        if amount is not None:
            facts["overage_rate"] = {
                "amount_minor": str(amount),
                "currency": customer.currency,
                "per": grant.overage.per,
            }
            facts["overage_rate_text"] = overage_rate_text(grant.overage, customer.currency, unit)
            if not grant.hard and now is not None:
                projected = projected_usage(used, tally.period, now)
                facts["projected_used"] = projected
                facts["projected_overage"] = {
                    "amount": overage_minor(
                        grant.overage, overage_units(grant, projected), customer.currency
                    ),
                    "currency": customer.currency,
                }
    return facts
