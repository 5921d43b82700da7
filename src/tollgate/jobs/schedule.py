"""The one schedule: which job runs how often. `tollgate worker` runs it until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tollgate.bootstrap import Container
from tollgate.jobs.plan_changes import apply_pending_plan_changes
from tollgate.jobs.webhooks import retry_failed_webhooks

log = logging.getLogger("tollgate.jobs")


@dataclass(frozen=True)
class Job:
    """A job and how often it runs; every job is safe to run twice and on several replicas."""

    name: str
    every: timedelta
    run: Callable[[Container], object]


def _retry_webhooks(app: Container) -> object:
    return retry_failed_webhooks(db=app.db, gateway=app.stripe, clock=app.clock)


SCHEDULE: tuple[Job, ...] = (
    Job("retry_failed_webhooks", timedelta(minutes=1), _retry_webhooks),
    # Pending downgrades are applied up to 10 minutes before the period ends; every 2 minutes
    # leaves several chances before the renewal bills.
    Job("apply_pending_plan_changes", timedelta(minutes=2), apply_pending_plan_changes),
)


class Worker:
    """Run each job of a schedule when it is due; a failing job is logged and tried next time."""

    def __init__(self, app: Container, schedule: tuple[Job, ...] = SCHEDULE) -> None:
        self.app = app
        self.schedule = schedule
        self.last_run: dict[str, datetime] = {}

    def due(self, now: datetime) -> list[Job]:
        return [
            job
            for job in self.schedule
            if job.name not in self.last_run or now - self.last_run[job.name] >= job.every
        ]

    def run_due(self) -> dict[str, object]:
        """Run every job that is due now; returns each one's report (or its error)."""
        now = self.app.clock.now()
        reports: dict[str, object] = {}
        for job in self.due(now):
            self.last_run[job.name] = now
            try:
                reports[job.name] = job.run(self.app)
            except Exception as error:  # one job's failure must not stop the others
                log.exception("job %s failed", job.name)
                reports[job.name] = error
        return reports

    def run_forever(self, stop: threading.Event, tick_seconds: float = 1.0) -> None:
        while not stop.is_set():
            self.run_due()
            stop.wait(tick_seconds)
