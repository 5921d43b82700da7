"""Report overage to Stripe's billing meters from the meter outbox."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.meter_usage import MeterSyncReport
from tollgate.services.meter_usage import sync_meter_usage as sync
from tollgate.services.usage import flush_usage


def sync_meter_usage(app: Container) -> MeterSyncReport:
    """Send the overage recorded since the last run (aggregated per customer and meter)."""
    # Usage counted in Redis queues its overage when folded: fold what is pending first.
    flush_usage(db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace)
    return sync(db=app.db, gateway=app.stripe, clock=app.clock)
