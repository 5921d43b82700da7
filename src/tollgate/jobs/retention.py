"""Prune the webhook inbox (payloads, then ids) as the retention settings say."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.retention import InboxPruning, prune_webhook_inbox


def prune_inbox(app: Container) -> InboxPruning:
    return prune_webhook_inbox(db=app.db, clock=app.clock, settings=app.settings)
