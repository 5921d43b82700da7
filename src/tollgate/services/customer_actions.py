"""What a customer does on its own billing page, each written to the audit log as done by it.

Every action calls the same use case the JSON API does (Checkout, plan change, Portal, cancel,
resume, credit packs) and then records `customer:<id>` as the actor, so the operator can tell
a change the customer made on the page from one the app made with its API key.
"""

from __future__ import annotations

from typing import Any

from tollgate.clock import Clock
from tollgate.db.models import AuditLog
from tollgate.db.unit_of_work import Database
from tollgate.services import credits, customers
from tollgate.services.deps import Deps
from tollgate.services.subscriptions import canceling, changing, checkout
from tollgate_client.views import CheckoutSession, SubscriptionView


def record_customer_action(
    *, db: Database, clock: Clock, customer_id: str, action: str, details: dict[str, Any]
) -> None:
    """Write one audit row: the customer did `action` from its billing page."""
    with db.transaction() as session:
        session.add(
            AuditLog(
                at=clock.now(),
                actor=f"customer:{customer_id}",
                object_type="customer",
                object_id=customer_id,
                action=action[:32],
                after={**details, "via": "billing_page"},
            )
        )


def checkout_as_customer(
    deps: Deps,
    *,
    customer_id: str,
    plan: str,
    interval: str,
    seats: int | None,
    success_url: str,
    cancel_url: str,
) -> CheckoutSession:
    """Open Checkout for a plan the customer picked on its page."""
    session = checkout.start_checkout(
        deps,
        customer_id=customer_id,
        plan=plan,
        interval=interval,
        seats=seats,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    details = {"plan": plan, "interval": interval, "seats": seats, "session": session.session_id}
    _record(deps, customer_id, "checkout", details)
    return session


def change_plan_as_customer(
    deps: Deps, *, customer_id: str, plan: str, interval: str, seats: int | None
) -> SubscriptionView:
    """Change the plan, interval or seats as the customer confirmed after the preview."""
    wanted = changing.SubscriptionRequest(plan=plan, interval=interval, seats=seats)
    changed = changing.change_subscription(deps, customer_id=customer_id, wanted=wanted)
    _record(deps, customer_id, "change_plan", {"plan": plan, "interval": interval, "seats": seats})
    return changed


def open_portal_as_customer(deps: Deps, *, customer_id: str, return_url: str) -> str:
    """Open the Customer Portal (payment methods, invoices) for the customer."""
    url = customers.open_portal(deps, customer_id=customer_id, return_url=return_url)
    _record(deps, customer_id, "portal", {})
    return url


def cancel_as_customer(deps: Deps, *, customer_id: str) -> SubscriptionView:
    """Cancel at period end, as the customer confirmed."""
    canceled = canceling.cancel_subscription(deps, customer_id=customer_id, at_period_end=True)
    _record(deps, customer_id, "cancel", {"at_period_end": True})
    return canceled


def resume_as_customer(deps: Deps, *, customer_id: str) -> SubscriptionView:
    """Undo a cancel at period end."""
    resumed = canceling.resume_subscription(deps, customer_id=customer_id)
    _record(deps, customer_id, "resume", {})
    return resumed


def buy_credits_as_customer(
    deps: Deps, *, customer_id: str, pack: str, success_url: str, cancel_url: str
) -> CheckoutSession:
    """Open Checkout for a credit pack."""
    session = credits.start_credit_checkout(
        deps,
        customer_id=customer_id,
        pack=pack,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    _record(deps, customer_id, "buy_credits", {"pack": pack, "session": session.session_id})
    return session


def _record(deps: Deps, customer_id: str, action: str, details: dict[str, Any]) -> None:
    record_customer_action(
        db=deps.db, clock=deps.clock, customer_id=customer_id, action=action, details=details
    )
