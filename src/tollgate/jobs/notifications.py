"""Send the emails waiting in the outbox."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.outbox import DeliveryReport, deliver_emails


def deliver_notifications(app: Container) -> DeliveryReport:
    """Send the due emails; each row is claimed first, so two workers never send one twice."""
    return deliver_emails(db=app.db, settings=app.settings, catalog=app.catalog, clock=app.clock)
