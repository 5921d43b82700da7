"""Keep the database's usage counters and the Redis counters in step."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.usage import FlushReport, ResyncReport, flush_usage, resync_usage


def flush_usage_counters(app: Container) -> FlushReport:
    """Fold usage counted in Redis (pending rows) into the counters, queueing its overage."""
    return flush_usage(db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace)


def resync_usage_counters(app: Container) -> ResyncReport | None:
    """Correct Redis counters left over-counted by a process that died mid-batch."""
    counters = app.usage_counters
    if counters is None:
        return None
    return resync_usage(db=app.db, counters=counters)
