"""Expire Checkout Sessions Tollgate opened and left open past TOLLGATE_CHECKOUT_EXPIRE_AFTER."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.checkout_expiry import CheckoutExpiryReport, expire_stale_checkouts


def expire_open_checkouts(app: Container) -> CheckoutExpiryReport:
    """Expire the open Checkout Sessions Tollgate made that are older than the setting."""
    return expire_stale_checkouts(
        db=app.db, gateway=app.stripe, settings=app.settings, clock=app.clock
    )
