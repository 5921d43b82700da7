"""Publish the queue depths as metrics (the worker's /metrics; alerts watch them)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.db.queries.queues import queue_depths
from tollgate.metrics import QUEUE_DEPTH


def measure_queues(app: Container) -> dict[str, int]:
    with app.db.engine.connect() as connection:
        depths = queue_depths(connection)
    for name, depth in depths.items():
        QUEUE_DEPTH.labels(name).set(depth)
    return depths
