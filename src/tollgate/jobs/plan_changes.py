"""Make pending downgrades in Stripe just before the renewal that should bill them."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.subscriptions.pending_changes import PlanChangeReport, apply_due_plan_changes


def apply_pending_plan_changes(app: Container) -> PlanChangeReport:
    """Apply the plan changes that fall due; each is keyed in Stripe, so a rerun is harmless."""
    return apply_due_plan_changes(
        db=app.db, catalog=app.catalog, gateway=app.stripe, settings=app.settings, clock=app.clock
    )
