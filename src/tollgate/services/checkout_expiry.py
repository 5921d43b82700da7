"""Expire the Checkout Sessions Tollgate opened that are still open after a while.

A session left open in a forgotten tab can still be paid until Stripe expires it (24 hours by
default): on terms the customer may since have changed, or beside a subscription made another
way. After `TOLLGATE_CHECKOUT_EXPIRE_AFTER_MINUTES`, `expire_stale_checkouts` expires the
sessions Tollgate made (they carry the customer's app id in their metadata; sessions other code
made in the same Stripe account are left alone), on the platform and each connected account.
Expiring is idempotent: a session paid or expired meanwhile is skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.reconcile import connected_accounts, skipping_refused_account
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import APP_ID_KEY

log = logging.getLogger("tollgate.checkout")


@dataclass
class CheckoutExpiryReport:
    """What one run did: sessions Tollgate made it found open and old, and those it expired."""

    stale: int = 0
    expired: int = 0
    refused_accounts: list[str] = field(default_factory=list)  # Stripe refused; skipped


def expire_stale_checkouts(
    *, db: Database, gateway: StripeGateway, settings: Settings, clock: Clock
) -> CheckoutExpiryReport:
    """Expire every open Checkout Session Tollgate made before the configured age."""
    report = CheckoutExpiryReport()
    made_before = clock.now() - timedelta(minutes=settings.checkout_expire_after_minutes)

    def skip(account: str, error: StripeFailure) -> None:
        report.refused_accounts.append(account)
        log.warning("checkout expiry skipped connected account %s: %s", account, error.message)

    for account in (None, *connected_accounts(db)):
        # One tenant revoking the platform's access must not stop the others' expiry.
        with skipping_refused_account(account, skip):
            _expire_in(gateway.for_account(account) if account else gateway, made_before, report)
    return report


def _expire_in(target: StripeGateway, made_before: datetime, report: CheckoutExpiryReport) -> None:
    for session in target.open_checkout_sessions(int(made_before.timestamp())):
        if not session["metadata"].get(APP_ID_KEY):
            continue
        report.stale += 1
        if target.expire_checkout_session(session["id"]):
            report.expired += 1
            log.info(
                "expired checkout session %s of customer %s",
                session["id"],
                session["metadata"][APP_ID_KEY],
            )
