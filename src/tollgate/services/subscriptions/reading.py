"""Read the customer's subscription: from the mirror (GET), or as Stripe just answered a write."""

from __future__ import annotations

from tollgate.db.models import PlanChange
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.events import SubscriptionSnapshot, tollgate_status
from tollgate.domain.subscriptions import is_live, plan_of
from tollgate.services.customers import (
    billing_currency,
    current_subscription,
    load_customer,
    pending_plan_change,
    shown_plan_version,
)
from tollgate.services.deps import Deps
from tollgate.services.discounts import discount_views
from tollgate_client.views import PendingChangeView, SubscriptionView


def get_subscription(deps: Deps, *, customer_id: str) -> SubscriptionView:
    """Return the customer's subscription from the mirror (plan and status as GET shows them)."""
    return read_subscription(deps.db, deps.catalog, customer_id)


def read_subscription(db: Database, catalog: Catalog, customer_id: str) -> SubscriptionView:
    with db.transaction() as session:
        customer = load_customer(session, customer_id)
        subscription = current_subscription(session, customer_id)
        pending = pending_view(pending_plan_change(session, customer_id))
        derived = plan_of(customer, subscription, catalog.default_plan)
        if subscription is None or not is_live(subscription.status):
            currency = billing_currency(session, customer, catalog)
            return _tollgate_side_view(derived.plan, derived.status, currency)
        return SubscriptionView(
            plan=derived.plan,
            interval=subscription.interval,
            status=derived.status,
            seats=subscription.seats,
            currency=subscription.currency,
            trial_end=subscription.trial_end,
            current_period_start=subscription.current_period_start,
            current_period_end=subscription.current_period_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
            collection_method=subscription.collection_method,
            stripe_subscription_id=subscription.id,
            pending_change=pending,
            plan_version=shown_plan_version(catalog, derived.plan, subscription),
            discounts=discount_views(
                session.connection(), subscription.discount_ids or [], subscription.currency
            ),
        )


def _tollgate_side_view(plan: str | None, status: str, currency: str | None) -> SubscriptionView:
    """Return the view of a plan Tollgate keeps without a Stripe subscription."""
    return SubscriptionView(
        plan=plan,
        interval=None,
        status=status,
        seats=None,
        currency=currency,
        trial_end=None,
        current_period_start=None,
        current_period_end=None,
        cancel_at_period_end=False,
        collection_method=None,
        stripe_subscription_id=None,
    )


def pending_view(change: PlanChange | None) -> PendingChangeView | None:
    if change is None:
        return None
    return PendingChangeView(change.plan, change.interval, change.seats, change.effective_at)


def stripe_view(
    snapshot: SubscriptionSnapshot, pending: PendingChangeView | None = None
) -> SubscriptionView:
    """Return the view of a subscription as Stripe just answered it."""
    status = snapshot.status
    if is_live(status):
        status = tollgate_status(
            status, cancel_at_period_end=snapshot.cancel_at_period_end, cancel_at=snapshot.cancel_at
        )
    return SubscriptionView(
        plan=snapshot.plan,
        interval=snapshot.interval,
        status=status,
        seats=snapshot.seats,
        currency=snapshot.currency,
        trial_end=snapshot.trial_end,
        current_period_start=snapshot.current_period_start,
        current_period_end=snapshot.current_period_end,
        cancel_at_period_end=snapshot.cancel_at_period_end,
        collection_method=snapshot.collection_method,
        stripe_subscription_id=snapshot.id,
        pending_change=pending,
        plan_version=snapshot.plan_version,
    )
