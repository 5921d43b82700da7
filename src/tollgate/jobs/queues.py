"""Publish the queue depths as metrics (the worker's /metrics; alerts watch them)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.queues import measure_queue_depths


def measure_queues(app: Container) -> dict[str, int]:
    return measure_queue_depths(db=app.db)
