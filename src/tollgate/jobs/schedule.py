"""The one schedule: which job runs how often. `tollgate worker` runs it until stopped."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, timedelta

from tollgate.bootstrap import Container
from tollgate.jobs.app_webhooks import deliver_app_webhooks
from tollgate.jobs.card_limits import follow_usage_past_card_limits
from tollgate.jobs.checkout_sessions import expire_open_checkouts
from tollgate.jobs.console_sessions import prune_console_sign_ins
from tollgate.jobs.credits import (
    expire_due_credits,
    grant_period_credits,
    invoice_credit_overdraft,
)
from tollgate.jobs.disputes import remind_disputes
from tollgate.jobs.locks import claim_interval, release_interval, run_alone
from tollgate.jobs.meter_usage import sync_meter_usage
from tollgate.jobs.notifications import deliver_notifications
from tollgate.jobs.plan_changes import apply_pending_plan_changes
from tollgate.jobs.plan_migrations import resume_stalled_plan_migrations
from tollgate.jobs.queues import measure_queues
from tollgate.jobs.reconcile import reconcile_nightly
from tollgate.jobs.retention import maintain_usage, prune_inbox
from tollgate.jobs.trials import remind_trials
from tollgate.jobs.usage_controls import (
    drip_plan_credits,
    release_expired_holds,
    run_auto_topups,
    send_meter_adjustments,
)
from tollgate.jobs.usage_counters import flush_usage_counters, resync_usage_counters
from tollgate.jobs.webhooks import retry_failed_webhooks
from tollgate.metrics import JOB_LAST_SUCCESS, JOB_RUNS, JOB_SECONDS

log = logging.getLogger("tollgate.jobs")


@dataclass(frozen=True)
class Job:
    """A job and how often it runs; every job is safe to run twice and on several replicas."""

    name: str
    every: timedelta
    run: Callable[[Container], object]


def _retry_webhooks(app: Container) -> object:
    return retry_failed_webhooks(
        db=app.db, gateway=app.stripe, clock=app.clock, dunning=app.dunning_policy
    )


SCHEDULE: tuple[Job, ...] = (
    Job("retry_failed_webhooks", timedelta(minutes=1), _retry_webhooks),
    # Pending downgrades are applied up to 10 minutes before the period ends; every 2 minutes
    # leaves several chances before the renewal bills.
    Job("apply_pending_plan_changes", timedelta(minutes=2), apply_pending_plan_changes),
    # Overage must reach Stripe before the period's invoice is finalised (about an hour after
    # the period ends); every 30 s keeps the lag (a metric) small and the calls aggregated.
    Job("sync_meter_usage", timedelta(seconds=30), sync_meter_usage),
    # With Redis counters: fold pending usage into the database counters (readers add what is
    # pending meanwhile), and correct counters a crash left over-counted (two looks apart).
    Job("flush_usage_counters", timedelta(seconds=1), flush_usage_counters),
    Job("resync_usage_counters", timedelta(minutes=1), resync_usage_counters),
    # Reservations past their ttl give their hold back; every 15 s keeps a lapsed hold short.
    Job("release_expired_holds", timedelta(seconds=15), release_expired_holds),
    # Voided usage whose overage Stripe has: its meter events cancelled (Stripe allows 24 h).
    Job("send_meter_adjustments", timedelta(seconds=30), send_meter_adjustments),
    # Usage that takes a coming renewal past its plan's card limit moves that invoice off
    # cards (and a new period gives them back); every 10 minutes, so the last ones of a period
    # are caught before its invoice is made.
    Job("follow_usage_past_card_limits", timedelta(minutes=10), follow_usage_past_card_limits),
    # Credits that fell below a customer's top-up level: the pack bought off-session, once.
    Job("run_auto_topups", timedelta(seconds=10), run_auto_topups),
    # Plans with `credits: {amount, every: month}`: each month's credits as it begins.
    Job("drip_plan_credits", timedelta(minutes=5), drip_plan_credits),
    Job("expire_credits", timedelta(minutes=5), expire_due_credits),
    Job("grant_plan_credits", timedelta(minutes=5), grant_period_credits),
    Job("invoice_credit_overdraft", timedelta(hours=1), invoice_credit_overdraft),
    Job("deliver_notifications", timedelta(seconds=10), deliver_notifications),
    Job("deliver_app_webhooks", timedelta(seconds=10), deliver_app_webhooks),
    # Trials whose `trial_will_end` never came get their reminder three days before the end;
    # hourly is early enough, and the notification key sends it once.
    Job("remind_trials_ending", timedelta(hours=1), remind_trials),
    # Disputes whose evidence is due within 2 days: the operator reminded, once (issue 21).
    Job("remind_dispute_deadlines", timedelta(hours=1), remind_disputes),
    # Sessions open past TOLLGATE_CHECKOUT_EXPIRE_AFTER_MINUTES (at least 30) are expired.
    Job("expire_open_checkouts", timedelta(minutes=10), expire_open_checkouts),
    # Once a day after TOLLGATE_RECONCILE_AT; the job checks that it is due itself.
    Job("reconcile_nightly", timedelta(minutes=5), reconcile_nightly),
    # Ended console sessions and day-old sign-in tries (the limits look back 15 minutes).
    Job("prune_console_sign_ins", timedelta(hours=1), prune_console_sign_ins),
    # Queue depths for /metrics (the worker's --metrics-port): a few counts, every 15 s.
    Job("measure_queues", timedelta(seconds=15), measure_queues),
    # Payloads of applied Stripe events past TOLLGATE_WEBHOOK_PAYLOAD_RETENTION_DAYS, and rows
    # past TOLLGATE_WEBHOOK_ID_RETENTION_DAYS; hourly keeps each run small.
    Job("prune_webhook_inbox", timedelta(hours=1), prune_inbox),
    # Raw usage events past TOLLGATE_USAGE_RAW_RETENTION_DAYS that nothing still needs, and on
    # PostgreSQL the coming months' partitions (two ahead: a missed run or two is harmless).
    Job("maintain_usage_storage", timedelta(hours=1), maintain_usage),
    # A plan migration whose process died is finished by the worker (issue 20).
    Job("resume_plan_migrations", timedelta(minutes=1), resume_stalled_plan_migrations),
)

# Another worker has this interval of the job (or is still running it).
SKIPPED = "skipped: another worker has it"


def summarize(report: object) -> str:
    """Say in a few words what a job's run did: its counts ("3 sent, 1 retrying")."""
    if isinstance(report, Exception):
        return f"failed: {type(report).__name__}: {report}"
    if report is None:
        return "done"
    if isinstance(report, bool | str):
        return str(report)
    if isinstance(report, int):
        return f"{report:,}"
    if isinstance(report, list | tuple):
        return f"{len(report):,}"
    if is_dataclass(report):
        counts = {
            item.name: getattr(report, item.name)
            for item in fields(report)
            if isinstance(getattr(report, item.name), int | list)
        }
        # Properties a report adds (e.g. a retry's succeeded and failed), after its fields.
        for name, value in vars(type(report)).items():
            if isinstance(value, property):
                counts[name] = getattr(report, name)
        words = [
            f"{len(value) if isinstance(value, list) else value:,} {name.replace('_', ' ')}"
            for name, value in counts.items()
            if isinstance(value, int | list) and not isinstance(value, bool)
        ]
        return ", ".join(words) or "done"
    return "done"


class Worker:
    """Run each job of a schedule when it is due; a failing job is logged and tried next time."""

    def __init__(
        self, app: Container, schedule: tuple[Job, ...] = SCHEDULE, holder: str | None = None
    ) -> None:
        self.app = app
        self.schedule = schedule
        self.last_run: dict[str, datetime] = {}
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def due(self, now: datetime) -> list[Job]:
        return [
            job
            for job in self.schedule
            if job.name not in self.last_run or now - self.last_run[job.name] >= job.every
        ]

    def run_due(self, stop: threading.Event | None = None) -> dict[str, object]:
        """Run every job that is due now; returns each one's report, error or SKIPPED.

        Across replicas, the first worker to claim a job's interval runs it; the others skip it.
        Once `stop` is set no further job starts (the one running finishes).
        """
        now = self.app.clock.now()
        reports: dict[str, object] = {}
        for job in self.due(now):
            if stop is not None and stop.is_set():
                break
            self.last_run[job.name] = now
            reports[job.name] = self._run_claimed(job, now)
        return reports

    def _run_claimed(self, job: Job, now: datetime) -> object:
        db = self.app.db
        started = time.perf_counter()
        try:
            if not claim_interval(db, name=job.name, holder=self.holder, now=now, every=job.every):
                JOB_RUNS.labels(job.name, "skipped").inc()
                return SKIPPED
            with run_alone(db, job.name) as alone:
                if not alone:
                    JOB_RUNS.labels(job.name, "skipped").inc()
                    return SKIPPED
                report = job.run(self.app)
            took = time.perf_counter() - started
            JOB_RUNS.labels(job.name, "succeeded").inc()
            JOB_SECONDS.labels(job.name).observe(took)
            JOB_LAST_SUCCESS.labels(job.name).set_to_current_time()
            log.debug(  # every second for some jobs: a line only when asked for
                "job %s: %s",
                job.name,
                summarize(report),
                extra={"job": job.name, "duration_ms": round(took * 1000, 2)},
            )
            return report
        except Exception as error:  # one job's failure must not stop the others
            JOB_RUNS.labels(job.name, "failed").inc()
            JOB_SECONDS.labels(job.name).observe(time.perf_counter() - started)
            log.exception("job %s failed", job.name, extra={"job": job.name})
            try:
                release_interval(db, name=job.name, holder=self.holder, now=now)
            except Exception:  # the database may be what failed; the claim then just expires
                log.exception("job %s: could not release its claim", job.name)
            return error

    def run_forever(self, stop: threading.Event, tick_seconds: float = 1.0) -> None:
        while not stop.is_set():
            self.run_due(stop)
            stop.wait(tick_seconds)
