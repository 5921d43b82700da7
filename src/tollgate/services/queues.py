"""How much work waits in each queue, published as metrics (alerts and the dashboard read it)."""

from __future__ import annotations

from tollgate.db.queries.queues import queue_depths
from tollgate.db.unit_of_work import Database
from tollgate.metrics import QUEUE_DEPTH


def measure_queue_depths(*, db: Database) -> dict[str, int]:
    """Count what waits in each outbox and the failed Stripe events; set the gauges."""
    with db.engine.connect() as connection:
        depths = queue_depths(connection)
    for name, depth in depths.items():
        QUEUE_DEPTH.labels(name).set(depth)
    return depths
