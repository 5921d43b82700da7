"""Corrections: usage taken back (voided) within the open period, and its overage in Stripe.

`void_usage` sends each voided event through the one recorder as a correction (an event that
counts the voided value down), so Redis's counters and the database's move together, and
stores the void (who, why) with it. When the counter's overage then falls below what was
queued or reported to Stripe, `take_back_overage` lowers what is still queued, and for what
Stripe has it cancels whole meter events (a meter event adjustment, cancel by identifier,
sent once by the `send_meter_adjustments` job) and queues again what those events held beyond
the correction. Events of a closed period are refused: their invoice is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation, Catalog
from tollgate.domain.errors import InvalidRequest
from tollgate.services.entitlements import load_billing_customers
from tollgate.services.usage.counters import CounterStore, Tallies
from tollgate.services.usage.events import MAX_ID_LENGTH, Rejection, UsageReport
from tollgate.services.usage.recording import record_usage

MAX_VOIDS = 1000
VOID_PREFIX = "void:"


@dataclass
class VoidReport:
    """What a void did: events taken back, voided before, refused with reasons."""

    voided: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "voided": self.voided,
            "duplicates": self.duplicates,
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


def void_usage(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    ids: Any,
    reason: Any,
    actor: str,
    grace: timedelta = timedelta(days=7),
    counters: CounterStore | None = None,
) -> VoidReport:
    """Take back recorded usage events of the open period, once each, with a reason."""
    wanted, reason_text = _checked(ids, reason)
    report = VoidReport()
    now = clock.now()
    with db.engine.connect() as connection:
        found = {row.id: row for row in queries.events_by_id(connection, wanted)}
        voided = queries.voided_ids(connection, wanted)
        customers = load_billing_customers(
            connection, catalog, {row.customer_id for row in found.values()}, now
        )
        connection.rollback()
    corrections: list[dict[str, Any]] = []
    originals: dict[str, Any] = {}
    for index, event_id in enumerate(wanted):
        row = found.get(event_id)
        problem = _problem(catalog, event_id, row, customers)
        if problem is not None or row is None:
            report.rejected.append(Rejection(index, event_id, *(problem or ("", ""))))
            continue
        if event_id in voided:
            report.duplicates += 1
            continue
        originals[VOID_PREFIX + event_id] = row
        corrections.append(
            {
                "id": VOID_PREFIX + event_id,
                "customer": row.customer_id,
                "meter": row.meter,
                "value": int(row.value),
                "timestamp": row.occurred_at.isoformat(),
            }
        )
    if not corrections:
        return report

    def decided(connection: Connection, tallies: Tallies, batch: UsageReport, at: datetime) -> None:
        for row in originals.values():
            if queries.insert_void(
                connection,
                {
                    "event_id": row.id,
                    "customer_id": row.customer_id,
                    "meter": row.meter,
                    "value": int(row.value),
                    "period_start": tallies[(row.customer_id, row.meter)].period.start,
                    "reason": reason_text,
                    "actor": actor,
                    "voided_at": at,
                },
            ):  # else voided by an earlier call: its correction was not new in this batch
                queries.audit_void(connection, row, reason=reason_text, actor=actor, now=at)

    batch = record_usage(
        db=db,
        catalog=catalog,
        clock=clock,
        events=corrections,
        enforce_limits=False,
        grace=grace,
        counters=counters,
        decided=decided,
        taken_back=frozenset(originals),
    )
    report.voided = batch.accepted
    report.duplicates += batch.duplicates
    report.customers = batch.customers
    for rejection in batch.rejected:  # the period ended between the look and the record
        report.rejected.append(
            Rejection(
                wanted.index(rejection.id.removeprefix(VOID_PREFIX)) if rejection.id else -1,
                rejection.id.removeprefix(VOID_PREFIX) if rejection.id else None,
                "closed_period" if rejection.code == "invalid_timestamp" else rejection.code,
                rejection.message,
            )
        )
    return report


def _checked(ids: Any, reason: Any) -> tuple[list[str], str]:
    if not isinstance(ids, list) or not ids:
        raise InvalidRequest("ids must be a list of 1 to 1,000 usage event ids", param="ids")
    if len(ids) > MAX_VOIDS:
        raise InvalidRequest(f"{len(ids):,} ids in one call; send at most 1,000", param="ids")
    if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids):
        raise InvalidRequest(f"each id must be a string of 1 to {MAX_ID_LENGTH}", param="ids")
    if len(set(ids)) != len(ids):
        raise InvalidRequest("ids must not repeat", param="ids")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise InvalidRequest("reason must say why, in 1 to 500 characters", param="reason")
    return ids, reason.strip()


def _problem(
    catalog: Catalog, event_id: str, row: Any, customers: dict[str, Any]
) -> tuple[str, str] | None:
    if row is None:
        return "unknown_event", f"no usage event {event_id!r} was recorded"
    if event_id.startswith(VOID_PREFIX) or event_id.startswith("reservation:"):
        return "not_voidable", (
            f"{event_id!r} is a correction or a reservation's step; release or void the usage "
            "it belongs to instead"
        )
    feature = catalog.features.get(row.meter)
    if feature is not None and feature.credits_per_unit:
        return "not_voidable", (
            f"{feature.name} is paid in credits: grant the credits back instead of voiding"
        )
    if feature is None or feature.aggregation is not Aggregation.SUM:
        return "not_voidable", (
            f"{row.meter!r} keeps the {'latest' if feature else 'unknown'} reading, not a sum: "
            "send a new reading instead of voiding one"
        )
    customer = customers.get(row.customer_id)
    if customer is None:
        return "unknown_customer", f"customer {row.customer_id!r} no longer exists"
    if row.occurred_at not in customer.period:
        return "closed_period", (
            f"event {event_id!r} counted in a closed billing period (before "
            f"{customer.period.start.isoformat()}); its invoice is final: refund or credit it "
            "on that invoice instead"
        )
    return None
