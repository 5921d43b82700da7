"""Cancel a subscription (now or at period end), or resume one canceling at period end."""

from __future__ import annotations

from tollgate.domain.errors import NotFound
from tollgate.domain.events import SubscriptionSnapshot
from tollgate.domain.subscriptions import is_live, request_id
from tollgate.services.customers import live_subscription, load_customer
from tollgate.services.deps import Deps
from tollgate.services.subscriptions.lookups import (
    OnlineCustomer,
    online_customer,
)
from tollgate.services.subscriptions.pending_changes import (
    StripeAnswer,
    after_write,
    note_change,
    supersede_plan_changes,
)
from tollgate.services.subscriptions.reading import read_subscription, stripe_view
from tollgate.services.webhooks import mirrored_watermark
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import subscription_snapshot
from tollgate_client.views import SubscriptionView


def cancel_subscription(
    deps: Deps,
    *,
    customer_id: str,
    at_period_end: bool,
    idempotency_key: str | None = None,
) -> SubscriptionView:
    """Cancel the subscription now, or at period end (`canceling` until then).

    Afterwards the customer is on the catalog's default plan. An offline customer goes back to
    the default plan at once.
    """
    db, catalog, gateway, clock = deps.db, deps.catalog, deps.optional_stripe(), deps.clock
    with db.transaction() as session:
        offline = load_customer(session, customer_id).offline
    if offline:
        with db.write_transaction() as session:
            row = load_customer(session, customer_id, lock=True)
            if row.plan is not None:
                row.plan = None
                row.updated_at = clock.now()
                note_change(session, customer_id, row.updated_at)
        return read_subscription(db, catalog, customer_id)
    customer, target = online_customer(db, catalog, gateway, customer_id)
    live = live_subscription(target, customer.stripe_id)
    if live is None:
        raise NotFound(f"customer {customer_id!r} has no subscription to cancel", param="id")
    current = live
    if at_period_end:
        if current.cancel_at_period_end:
            supersede_plan_changes(db, customer_id, clock)
            return stripe_view(current)
        return _set_cancel_at_period_end(deps, customer, target, current, True, idempotency_key)
    key = request_id(idempotency_key, {"cancel_now": current.id}, customer.state_version)
    before = mirrored_watermark(db, current.id)
    try:
        canceled = target.cancel_subscription(
            current.id, idempotency_key=f"sub-cancel-now-{customer_id}-{key}"
        )
    except StripeFailure:
        # A retry after a timeout finds it canceled already: that is the answer wanted.
        canceled = target.retrieve_subscription(current.id)
        if is_live(str(canceled.get("status"))):
            raise
    after_write(
        db,
        customer_id,
        clock,
        StripeAnswer(canceled, target, customer.account, deps.dunning_policy, before),
    )
    return stripe_view(subscription_snapshot(canceled))


def resume_subscription(
    deps: Deps, *, customer_id: str, idempotency_key: str | None = None
) -> SubscriptionView:
    """Undo a cancel at period end before the period ends (nothing to undo: nothing changes)."""
    customer, target = online_customer(deps.db, deps.catalog, deps.optional_stripe(), customer_id)
    live = live_subscription(target, customer.stripe_id)
    if live is None:
        raise NotFound(
            f"customer {customer_id!r} has no subscription to resume (an ended one cannot be; "
            "start a new one)",
            param="id",
        )
    current = live
    if not current.cancel_at_period_end and current.cancel_at is None:
        return stripe_view(current)
    return _set_cancel_at_period_end(deps, customer, target, current, False, idempotency_key)


def _set_cancel_at_period_end(
    deps: Deps,
    customer: OnlineCustomer,
    target: StripeGateway,
    current: SubscriptionSnapshot,
    cancel: bool,
    idempotency_key: str | None,
) -> SubscriptionView:
    """Ask Stripe to cancel the subscription at period end (or not any more); the view after."""
    verb = "cancel" if cancel else "resume"
    key = request_id(idempotency_key, {verb: current.id}, customer.state_version)
    before = mirrored_watermark(deps.db, current.id)
    updated = target.update_subscription(
        current.id,
        idempotency_key=f"sub-{verb}-{customer.id}-{key}",
        params={"cancel_at_period_end": cancel},
    )
    answer = StripeAnswer(updated, target, customer.account, deps.dunning_policy, before)
    after_write(deps.db, customer.id, deps.clock, answer)
    return stripe_view(subscription_snapshot(updated))
