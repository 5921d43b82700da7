"""Overage already queued or reported to Stripe, taken back after usage was voided."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.services.usage.counters import Tally
from tollgate.stripe.errors import StripeFailure, StripeUnavailable
from tollgate.stripe.gateway import StripeGateway

log = logging.getLogger("tollgate.usage")

MAX_ATTEMPTS = 10


def take_back_overage(
    connection: Connection, tally: Tally, units: int, now: datetime
) -> tuple[int, int]:
    """Take back `units` of a counter's overage queued or reported to Stripe.

    Returns (units still reported that could not be taken back now, units to queue again): the
    first is what meter events in flight hold (taken back at the counter's next correction);
    the second what the cancelled meter events held beyond `units`.
    """
    customer, feature, start = tally.customer.id, tally.meter, tally.period.start
    left = units
    for row_id, value in queries.unsent_overage(connection, customer, feature, start):
        taken = min(value, left)
        queries.take_back_unsent(connection, row_id, value - taken)
        left -= taken
        if left == 0:
            return 0, 0
    cancelled = 0
    for sent in queries.sent_overage(connection, customer, feature, start):
        if cancelled >= left:
            break
        queries.cancel_sent(connection, sent, customer, now)
        cancelled += int(sent.units)
    if cancelled < left:
        log.warning(
            "overage of %s %s: %d units in flight to Stripe, taken back at the next correction",
            customer,
            feature,
            left - cancelled,
        )
        return left - cancelled, 0
    return 0, cancelled - left


@dataclass
class AdjustmentReport:
    """What one run of `send_meter_adjustments` did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0


def send_meter_adjustments(
    *, db: Database, gateway: StripeGateway, clock: Clock, batch: int = 200
) -> AdjustmentReport:
    """Cancel in Stripe each meter event a correction took back (meter event adjustments)."""
    report = AdjustmentReport()
    with db.engine.connect() as connection:
        due = queries.pending_adjustments(connection, batch)
        connection.rollback()
    for adjustment in due:
        now = clock.now()
        status, error = "sent", None
        try:
            gateway.for_account(adjustment.stripe_account).cancel_meter_event(
                event_name=adjustment.event_name, identifier=adjustment.cancel_identifier
            )
            report.sent += 1
        except StripeUnavailable as failure:
            status, error = "pending", str(failure)
            report.retrying += 1
        except StripeFailure as failure:
            # Past Stripe's 24-hour window, or the event is gone: no retry can do it; the
            # nightly reconciliation shows the difference, to be credited on the invoice.
            retry = adjustment.attempts + 1 < MAX_ATTEMPTS
            status, error = ("pending" if retry else "failed"), str(failure)
            if retry:
                report.retrying += 1
            else:
                log.error("meter event %s not cancelled: %s", adjustment.cancel_identifier, error)
                report.failed += 1
        with db.write_connection() as connection:
            queries.mark_adjustment(connection, adjustment.id, status=status, error=error, now=now)
    return report
