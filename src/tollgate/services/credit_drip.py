"""Monthly credits on long plans: a plan's `credits: {amount, every: month}` granted at the
start of each month of the subscription's period (an annual plan gets its allowance monthly).

Each month's grant is keyed by subscription and month start, so a rerun or a replica grants
nothing twice; the credits expire when the next month begins (or the period ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import Any

from tollgate.clock import Clock
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.metering import add_months
from tollgate.services.credit_ledger import grant_credits_in
from tollgate.services.credits import due_plan_grants


def drip_monthly_credits(*, db: Database, catalog: Catalog, clock: Clock) -> int:
    """Grant every live subscription the monthly credits of the months begun; return how many
    grants were new."""
    now = clock.now()
    plans, due = due_plan_grants(db, catalog, "monthly_credits", now, partial(_months_begun, now))
    granted = 0
    for key, (row, begins, ends) in sorted(due.items()):
        if ends <= now:
            continue  # a month already past when first seen is not granted late
        with db.write_connection() as connection:
            _, created = grant_credits_in(
                connection,
                customer_id=row.customer_id,
                credits=plans[row.plan],
                reason=f"plan {row.plan} credits for the month from {begins.date().isoformat()}",
                key=key,
                actor="system",
                now=now,
                expires_at=ends,
            )
        granted += int(created)
    return granted


def _months_begun(now: datetime, subscription: Any) -> Iterator[tuple[str, Any]]:
    """Yield the subscription's months begun by `now` in its period: key, and (it, start, end)."""
    start, end = subscription.current_period_start, subscription.current_period_end
    month = 0
    while True:
        begins = add_months(start, month)
        if begins > now or (end is not None and begins >= end):
            return
        ends = add_months(start, month + 1)
        if end is not None:
            ends = min(ends, end)
        yield f"drip:{subscription.id}:{int(begins.timestamp())}", (subscription, begins, ends)
        month += 1
