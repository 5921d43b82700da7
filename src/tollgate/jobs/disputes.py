"""Dispute deadline reminders for the operator."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.dispute_reminders import remind_dispute_deadlines


def remind_disputes(app: Container) -> int:
    """Queue the `dispute_reminder` email for disputes due within 2 days, once each."""
    return remind_dispute_deadlines(db=app.db, clock=app.clock)
