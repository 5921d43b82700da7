"""The operator's reminder of a dispute whose evidence is due within 2 days, once each.

`charge.dispute.created` tells the operator at once (`dispute_opened`); Stripe says nothing more
until the deadline passes and the dispute is lost. `remind_dispute_deadlines` queues
`dispute_reminder` from the mirror once an open dispute is within 2 days of its
`evidence_due_by`; the notification key (customer, template, dispute) sends it once however often
the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tollgate.clock import Clock
from tollgate.db.queries import billing
from tollgate.db.unit_of_work import Database
from tollgate.services.outbox import queue_reminders
from tollgate.services.webhooks.notices import dispute_facts
from tollgate.stripe.translate import dispute_snapshot

REMINDER_LEAD = timedelta(days=2)


def remind_dispute_deadlines(*, db: Database, clock: Clock) -> int:
    """Queue `dispute_reminder` for every open dispute due within 2 days; returns how many."""
    return queue_reminders(
        db=db,
        clock=clock,
        template="dispute_reminder",
        due=lambda connection, now: billing.disputes_due(connection, now, REMINDER_LEAD),
        cause=lambda dispute: dispute["id"],
        facts=_dispute_facts,
    )


def _dispute_facts(dispute: Mapping[str, Any]) -> dict[str, Any]:
    """The facts the webhook path gives a dispute's emails, and when its evidence is due."""
    snapshot = dispute_snapshot(
        {
            "id": dispute["id"],
            "charge": dispute["charge_id"],
            "amount": dispute["amount"],
            "currency": dispute["currency"],
            "status": dispute["status"],
            "reason": dispute["reason"],
        }
    )
    return dispute_facts(snapshot) | {"evidence_due_by": dispute["evidence_due_by"]}
