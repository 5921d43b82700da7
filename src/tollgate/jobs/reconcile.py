"""The nightly reconciliation with Stripe, run once a day after TOLLGATE_RECONCILE_AT (UTC)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.domain.reconcile import nightly_since, nightly_slot
from tollgate.services.reconcile import (
    AlreadyReconciled,
    last_nightly_window_end,
    nightly_run_taken,
    run_reconcile,
)


def reconcile_nightly(app: Container) -> object:
    """Reconcile the window since the last nightly run, once per day; the report, or why not."""
    now = app.clock.now()
    slot = nightly_slot(now, app.settings.reconcile_at)
    if slot is None:
        return "not due yet today"
    if nightly_run_taken(db=app.db, scheduled_for=slot):
        return "done today"
    since = nightly_since(now, last_nightly_window_end(db=app.db))
    try:
        # The slot is claimed by a unique row, so of replicas racing here one runs it.
        return run_reconcile(app, since=since, trigger="nightly", scheduled_for=slot)
    except AlreadyReconciled:
        return "done today"
