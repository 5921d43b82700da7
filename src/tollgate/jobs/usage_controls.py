"""Usage controls' jobs: expired holds given back, voided overage cancelled in Stripe."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.credit_drip import drip_monthly_credits
from tollgate.services.topups import TopupReport
from tollgate.services.topups import run_auto_topups as run_topups
from tollgate.services.usage.overage import AdjustmentReport
from tollgate.services.usage.overage import send_meter_adjustments as send_adjustments
from tollgate.services.usage.reservations import Usage, release_expired_reservations


def release_expired_holds(app: Container) -> int:
    """Release held reservations past their `expires_at`; return how many."""
    usage = Usage(app.db, app.catalog, app.clock, app.grace, app.usage_counters)
    return release_expired_reservations(usage)


def send_meter_adjustments(app: Container) -> AdjustmentReport:
    """Cancel in Stripe the meter events corrections took back, each once."""
    return send_adjustments(db=app.db, gateway=app.stripe, clock=app.clock)


def run_auto_topups(app: Container) -> TopupReport:
    """Pay queued automatic credit top-ups, each once (a failure emails the customer)."""
    return run_topups(db=app.db, catalog=app.catalog, gateway=app.stripe, clock=app.clock)


def drip_plan_credits(app: Container) -> int:
    """Grant the monthly credits of plans with `credits: {amount, every: month}`."""
    return drip_monthly_credits(db=app.db, catalog=app.catalog, clock=app.clock)
