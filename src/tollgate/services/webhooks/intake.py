"""Stripe's deliveries as they arrive: checked on the event loop, applied by a writer thread.

The signature is checked on the event loop (microseconds: an HMAC and an orjson parse), so a bad
delivery never waits behind good ones. Verified deliveries are applied by one writer thread,
never on the event loop (a transaction may wait for a lock, and every request would wait with
it). The writer takes every delivery queued since its last commit and applies them together
(`apply_stripe_deliveries`; services/group_commit.py), answering each after the shared commit.

One thread means a delivery whose customer is locked by another transaction (a job, another
process) holds up this process's later deliveries until that lock is released; Tollgate's
transactions are short. Measured with bench/webhooks.py: on PostgreSQL, where an event's
statements go in one or two round trips, more threads only fought over the interpreter's lock
(four threads, each owning a share of the customers, did 20-25 % fewer events/s than one).

An event that needs an object from Stripe finishes on another thread, so a slow answer from
Stripe holds up no other delivery: one of FETCH_THREADS fetch threads (group-commit writers of
one item at a time), the least busy, each keeping a database connection while it has work, as
the writer does. `asyncio.to_thread` before took a connection from the pool for each such event
(on PostgreSQL its pre-ping, a round trip) and handed the event through the default executor.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.dunning import DunningPolicy
from tollgate.metrics import INVOICE_PAYMENTS, WEBHOOK_LATENCY, Timings
from tollgate.services.group_commit import GroupWriter
from tollgate.services.webhooks.inbox import (
    Delivery,
    ProcessResult,
    WebhookProcessingFailed,
    apply_stripe_deliveries,
    process_stripe_event,
    verify_stripe_delivery,
)
from tollgate.stripe.gateway import StripeGateway

log = logging.getLogger("tollgate.webhooks")
_LATENCY = Timings(WEBHOOK_LATENCY)  # observed per delivery, on the event loop

# At most this many deliveries share a transaction: enough to amortise a commit, few enough
# that the first of a group does not wait long for the last.
GROUP = 64
# The writer thread ends after this long without a delivery (and starts again with the next),
# so an idle process keeps no thread and no pinned connection.
IDLE_SECONDS = 10.0
# Events that need Stripe finish on this many threads at most: as many as asyncio.to_thread's
# default executor had, so as many slow answers from Stripe at once hold up no other event.
FETCH_THREADS = min(32, (os.cpu_count() or 1) + 4)


class WebhookIntake:
    """Take Stripe's deliveries for one database: verify, store and apply each exactly once."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        settings: Settings,
        dunning: DunningPolicy,
        gateway: Callable[[], StripeGateway | None],
        on_change: Callable[[Sequence[str]], None],
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.dunning = dunning
        self._gateway = gateway
        self._on_change = on_change
        self._writer: GroupWriter[Delivery, ProcessResult] = GroupWriter(
            db, self._apply, name="tollgate-webhooks", group=GROUP, idle_seconds=IDLE_SECONDS
        )
        # One event at a time each; the events each has in hand (read and written on the loop).
        self._fetchers: list[GroupWriter[ProcessResult, ProcessResult]] = [
            GroupWriter(
                db,
                self._finish_all,
                name="tollgate-webhook-fetch",
                group=1,
                idle_seconds=IDLE_SECONDS,
            )
            for _ in range(FETCH_THREADS)
        ]
        self._fetching = [0] * FETCH_THREADS

    async def take(self, body: bytes, signature: str | None) -> ProcessResult:
        """Verify, store and apply one delivery; raise TollgateError (the API's answer) if not.

        A bad delivery stores nothing. A duplicate of an applied event answers `duplicate`. A
        failure leaves the event stored as failed (for Stripe's retry and the retry job) and
        raises WebhookProcessingFailed, so Stripe is told to deliver it again.
        """
        started = time.perf_counter()
        delivery = verify_stripe_delivery(
            raw_body=body, signature_header=signature, settings=self.settings, clock=self.clock
        )
        try:
            result = await self._writer.apply(delivery)
            if result.pending:
                result = await self._finish_elsewhere(result)
        finally:
            took = time.perf_counter() - started
            _LATENCY.observe(took)
        _observe(delivery, result, took)
        if result.failed:
            raise WebhookProcessingFailed(
                f"event {result.event_id} is stored but could not be applied; "
                "it will be retried (see `tollgate events list --status failed`)"
            )
        if result.customers:
            # This process's cached decisions go at once; other processes see the change feed.
            self._on_change(result.customers)
        return result

    def _apply(self, deliveries: list[Delivery]) -> list[ProcessResult]:
        return list(
            apply_stripe_deliveries(
                db=self.db, deliveries=deliveries, clock=self.clock, dunning=self.dunning
            )
        )

    async def _finish_elsewhere(self, pending: ProcessResult) -> ProcessResult:
        """Finish a pending event on the least busy fetch thread (the first of those least
        busy, so a quiet process uses one thread and one connection)."""
        fetching = self._fetching
        index = fetching.index(min(fetching))
        fetching[index] += 1
        try:
            return await self._fetchers[index].apply(pending)
        finally:
            fetching[index] -= 1

    def _finish_all(self, pending: list[ProcessResult]) -> list[ProcessResult]:
        return [self._finish(each) for each in pending]

    def _finish(self, pending: ProcessResult) -> ProcessResult:
        return process_stripe_event(
            db=self.db,
            gateway=self._gateway(),
            event_id=pending.event_id,
            clock=self.clock,
            dunning=self.dunning,
            need=pending.need,
            leased=pending.leased,
            event=pending.event,
        )

    def close(self) -> None:
        """Stop the writer and fetch threads once the deliveries they have are answered."""
        self._writer.stop()
        for fetcher in self._fetchers:
            fetcher.stop()


# Stripe's word on an invoice's payment, for the payment failure rate.
_PAYMENT_OUTCOMES = {"invoice.paid": "succeeded", "invoice.payment_failed": "failed"}


def _observe(delivery: Delivery, result: ProcessResult, took: float) -> None:
    """Count a payment outcome (once per event) and log the event's line."""
    event_type = str(delivery.event.get("type", ""))
    outcome = _PAYMENT_OUTCOMES.get(event_type)
    if outcome is not None and result.outcome == "succeeded":
        INVOICE_PAYMENTS.labels(outcome).inc()
    if log.isEnabledFor(logging.INFO):
        log.info(
            "stripe event %s %s: %s",
            result.event_id,
            event_type,
            result.outcome,
            extra={
                "event_id": result.event_id,
                "customer_id": ",".join(result.customers) or None,
                "duration_ms": round(took * 1000, 2),
            },
        )
