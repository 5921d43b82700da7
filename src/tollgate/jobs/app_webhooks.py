"""POST the app webhooks waiting in the outbox."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.outbox import DeliveryReport, deliver_app_events


def deliver_app_webhooks(app: Container) -> DeliveryReport:
    """Deliver the due app webhooks, signed; each row is claimed first, so each goes once."""
    return deliver_app_events(db=app.db, settings=app.settings, clock=app.clock)
