"""Send overage from the meter outbox to Stripe's billing meters, each unit counted once.

Two steps, each its own transaction. First pending rows are grouped per customer, meter and
period, and each group is stamped with an `identifier` (a claim). Then every claimed group is
sent as one meter event carrying its identifier. A crash or timeout between the two steps, or
after Stripe accepted the event, leaves the group claimed with the same identifier; the next run
sends it again and Stripe, which counts an identifier once, ignores the repeat.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from tollgate.clock import Clock
from tollgate.db.tables import METER_OUTBOX
from tollgate.db.types import UTCDateTime
from tollgate.db.unit_of_work import Database
from tollgate.domain.events import retry_delay
from tollgate.domain.reconcile import meter_event_moment
from tollgate.metrics import METER_SYNC_LAG, METER_UNITS_SENT
from tollgate.stripe.errors import StripeFailure, StripeUnavailable
from tollgate.stripe.gateway import StripeGateway

log = logging.getLogger("tollgate.meter_usage")

MAX_ATTEMPTS = 20

# What a group of outbox rows (one identifier) sends as one meter event: the units it adds up
# to and the moments its timestamp is chosen from (domain.reconcile.meter_event_moment).
GROUP_EVENT_COLUMNS = (
    func.sum(METER_OUTBOX.c.value).label("value"),
    func.max(METER_OUTBOX.c.occurred_at, type_=UTCDateTime()).label("occurred_at"),
    func.min(METER_OUTBOX.c.period_start, type_=UTCDateTime()).label("period_start"),
    func.min(METER_OUTBOX.c.period_end, type_=UTCDateTime()).label("period_end"),
)


@dataclass
class MeterSyncReport:
    """What one run did: groups claimed, events sent (or already in Stripe), failures."""

    claimed: int = 0
    sent: int = 0
    already_sent: int = 0
    units: int = 0
    retrying: int = 0
    failed: int = 0


def sync_meter_usage(
    *, db: Database, gateway: StripeGateway, clock: Clock, batch: int = 1000
) -> MeterSyncReport:
    """Claim pending overage into groups and send every claimed group that is due."""
    report = MeterSyncReport()
    now = clock.now()
    report.claimed = _claim(db, now, batch)
    for group in _due_groups(db, now, batch):
        _send(db, gateway, clock, group, report)
    _measure_lag(db, clock.now())
    return report


def _claim(db: Database, now: datetime, batch: int) -> int:
    with db.write_connection() as connection:
        query = (
            select(
                METER_OUTBOX.c.id,
                METER_OUTBOX.c.stripe_account,
                METER_OUTBOX.c.stripe_customer_id,
                METER_OUTBOX.c.event_name,
                METER_OUTBOX.c.period_start,
            )
            .where(METER_OUTBOX.c.status == "pending")
            .order_by(METER_OUTBOX.c.id)
            .limit(batch)
            # Replicas claim different rows on PostgreSQL; SQLite's writer holds the database.
            .with_for_update(skip_locked=True)
        )
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for row in connection.execute(query):
            key = (row.stripe_account, row.stripe_customer_id, row.event_name, row.period_start)
            groups[key].append(int(row.id))
        for (_, stripe_customer_id, _, _), ids in groups.items():
            # Unique: the first id belongs to this group alone. The Stripe customer in it keeps
            # two Tollgate databases (say, a reset dev one) from colliding in one Stripe account.
            identifier = f"tg-{stripe_customer_id}-{ids[0]}-{ids[-1]}"
            connection.execute(
                update(METER_OUTBOX)
                .where(METER_OUTBOX.c.id.in_(ids), METER_OUTBOX.c.status == "pending")
                .values(status="claimed", identifier=identifier)
            )
        return len(groups)


@dataclass(frozen=True)
class _Group:
    identifier: str
    stripe_account: str | None
    stripe_customer_id: str
    event_name: str
    feature: str
    value: int
    occurred_at: datetime
    period_start: datetime
    period_end: datetime
    attempts: int


# What one group's outbox rows share: its meter event's identifier and where it goes.
_GROUP_KEY = (
    METER_OUTBOX.c.identifier,
    METER_OUTBOX.c.stripe_account,
    METER_OUTBOX.c.stripe_customer_id,
    METER_OUTBOX.c.event_name,
    METER_OUTBOX.c.feature,
)


def _due_groups(db: Database, now: datetime, batch: int) -> list[_Group]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(
                *_GROUP_KEY,
                *GROUP_EVENT_COLUMNS,
                func.max(METER_OUTBOX.c.attempts).label("attempts"),
            )
            .where(
                METER_OUTBOX.c.status == "claimed",
                (METER_OUTBOX.c.next_attempt_at.is_(None))
                | (METER_OUTBOX.c.next_attempt_at <= now),
            )
            .group_by(*_GROUP_KEY)
            .order_by(func.min(METER_OUTBOX.c.id))
            .limit(batch)
        ).all()
        connection.rollback()
    return [
        _Group(
            identifier=row.identifier,
            stripe_account=row.stripe_account,
            stripe_customer_id=row.stripe_customer_id,
            event_name=row.event_name,
            feature=row.feature,
            value=int(row.value),
            occurred_at=row.occurred_at,
            period_start=row.period_start,
            period_end=row.period_end,
            attempts=int(row.attempts or 0),
        )
        for row in rows
    ]


def _send(
    db: Database, gateway: StripeGateway, clock: Clock, group: _Group, report: MeterSyncReport
) -> None:
    now = clock.now()
    moment = meter_event_moment(group.occurred_at, group.period_start, group.period_end)
    try:
        fresh = gateway.for_account(group.stripe_account).report_meter_event(
            event_name=group.event_name,
            stripe_customer_id=group.stripe_customer_id,
            value=group.value,
            identifier=group.identifier,
            timestamp=int(moment.timestamp()),
        )
    except StripeUnavailable as error:
        _mark(db, group, now, retry=True, error=str(error))
        report.retrying += 1
        return
    except StripeFailure as error:
        # A refusal may pass later (a timestamp ahead of Stripe's clock, a meter being made).
        retry = group.attempts + 1 < MAX_ATTEMPTS
        _mark(db, group, now, retry=retry, error=str(error))
        if retry:
            report.retrying += 1
        else:
            log.error("overage %s refused by Stripe: %s", group.identifier, error)
            report.failed += 1
        return
    _mark(db, group, now, sent=True)
    if fresh:
        report.sent += 1
        report.units += group.value
        METER_UNITS_SENT.labels(group.feature).inc(group.value)
    else:
        report.already_sent += 1


def _mark(
    db: Database,
    group: _Group,
    now: datetime,
    *,
    sent: bool = False,
    retry: bool = False,
    error: str | None = None,
) -> None:
    values: dict[str, Any]
    if sent:
        values = {"status": "sent", "sent_at": now, "last_error": None}
    elif retry:
        values = {
            "attempts": METER_OUTBOX.c.attempts + 1,
            "next_attempt_at": now + retry_delay(group.attempts + 1),
            "last_error": error,
        }
    else:
        values = {"status": "failed", "attempts": METER_OUTBOX.c.attempts + 1, "last_error": error}
    with db.write_connection() as connection:
        connection.execute(
            update(METER_OUTBOX)
            .where(
                METER_OUTBOX.c.identifier == group.identifier, METER_OUTBOX.c.status == "claimed"
            )
            .values(**values)
        )


def _measure_lag(db: Database, now: datetime) -> None:
    with db.engine.connect() as connection:
        oldest = connection.execute(
            select(func.min(METER_OUTBOX.c.created_at, type_=UTCDateTime())).where(
                METER_OUTBOX.c.status.in_(("pending", "claimed"))
            )
        ).scalar()
        connection.rollback()
    METER_SYNC_LAG.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
