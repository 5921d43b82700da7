"""Credits jobs: write off expired credits, grant plan credits, invoice the overdraft."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.credits import (
    OverdraftInvoice,
    expire_credits,
    grant_plan_credits,
    invoice_overdrafts,
)


def expire_due_credits(app: Container) -> int:
    """Write off credits past their expiry; returns how many lots expired."""
    return expire_credits(db=app.db, clock=app.clock)


def grant_period_credits(app: Container) -> int:
    """Grant each live subscription its plan's credits for the current period, once."""
    return grant_plan_credits(db=app.db, catalog=app.catalog, clock=app.clock)


def invoice_credit_overdraft(app: Container) -> list[OverdraftInvoice]:
    """Invoice credit overdrafts on the set day of the month, once per customer and range."""
    return invoice_overdrafts(
        db=app.db, catalog=app.catalog, gateway=app.stripe, settings=app.settings, clock=app.clock
    )
