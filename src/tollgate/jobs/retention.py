"""Prune what grows for years as the retention settings say: the webhook inbox (payloads, then
ids) and raw usage events (monthly partitions made ahead on PostgreSQL)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.retention import InboxPruning, prune_webhook_inbox
from tollgate.services.usage.storage import UsageStorageReport, maintain_usage_storage


def prune_inbox(app: Container) -> InboxPruning:
    return prune_webhook_inbox(db=app.db, clock=app.clock, settings=app.settings)


def maintain_usage(app: Container) -> UsageStorageReport:
    return maintain_usage_storage(db=app.db, clock=app.clock, settings=app.settings)
