"""Trial-ending reminders from the mirror, for trials Stripe did not announce.

Stripe sends `customer.subscription.trial_will_end` three days before a trial ends, and its
webhook handler queues the `trial_ending` email. A trial made shorter than that, or whose event
was lost, would end unannounced: `remind_trials_ending` queues the same email from the mirror
once a trialing subscription is within three days of its end. Both use the same notification
key (customer, template, subscription and trial end), so the customer gets it once, whichever
comes first; a trial moved to a new end is a new cause and gets its own reminder.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tollgate.clock import Clock
from tollgate.db.queries import billing
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import TollgateError
from tollgate.domain.subscriptions import trial_cause
from tollgate.services.outbox import queue_reminders

# As Stripe's `trial_will_end`.
REMINDER_LEAD = timedelta(days=3)


def remind_trials_ending(*, db: Database, catalog: Catalog, clock: Clock) -> int:
    """Queue `trial_ending` for every trial ending within three days; returns how many trials.

    Queueing again for a trial already reminded is a no-op (the notification key).
    """
    return queue_reminders(
        db=db,
        clock=clock,
        template="trial_ending",
        due=lambda connection, now: billing.trials_ending(connection, now, REMINDER_LEAD),
        cause=lambda trial: trial_cause(trial["id"], trial["trial_end"]),
        facts=lambda trial: _trial_facts(trial, catalog),
    )


def _trial_facts(trial: Mapping[Any, Any], catalog: Catalog) -> dict[str, Any]:
    """The facts the webhook path gives `trial_ending`, from the mirror and the catalog."""
    return {
        "subscription": trial["id"],
        "plan": trial["plan"],
        "interval": trial["interval"],
        "seats": trial["seats"],
        "amount": _amount_after_trial(trial, catalog),
        "trial_end": trial["trial_end"],
        "current_period_end": trial["current_period_end"],
        "access_until": trial["cancel_at"] or trial["current_period_end"],
        "ended_at": trial["ended_at"],
    }


def _amount_after_trial(trial: Mapping[Any, Any], catalog: Catalog) -> dict[str, Any] | None:
    """What the first paid period costs at the catalog's price, or None if unknown."""
    plan = catalog.plans.get(trial["plan"] or "")
    if plan is None or plan.is_free or not trial["interval"] or not trial["currency"]:
        return None
    try:
        price = plan.price_for(trial["interval"], trial["currency"])
    except TollgateError:
        return None
    quantity = trial["seats"] or 1
    return {"amount": price.amount_minor * quantity, "currency": price.currency}
