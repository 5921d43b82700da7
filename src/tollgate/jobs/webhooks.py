"""Retry Stripe events that failed, or that a crashed worker left pending or processing."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollgate.clock import Clock
from tollgate.db.unit_of_work import Database
from tollgate.domain.dunning import DunningPolicy
from tollgate.services.webhooks import (
    ProcessMode,
    ProcessResult,
    due_stripe_events,
    process_stripe_event,
)
from tollgate.stripe.gateway import StripeGateway


@dataclass(frozen=True)
class RetryReport:
    """What one run of the retry job did, event by event."""

    results: list[ProcessResult] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(result.outcome in ("succeeded", "ignored") for result in self.results)

    @property
    def failed(self) -> int:
        return sum(result.failed for result in self.results)


def retry_failed_webhooks(
    *,
    db: Database,
    gateway: StripeGateway | None,
    clock: Clock,
    dunning: DunningPolicy,
    limit: int = 100,
) -> RetryReport:
    """Apply again up to `limit` due events: failed ones past their backoff, and stuck ones."""
    # Each event is claimed on its own, so two replicas running this at once apply it once.
    return RetryReport(
        [
            process_stripe_event(
                db=db,
                gateway=gateway,
                event_id=event_id,
                clock=clock,
                dunning=dunning,
                mode=ProcessMode.RETRY,
            )
            for event_id in due_stripe_events(db=db, clock=clock, limit=limit)
        ]
    )
