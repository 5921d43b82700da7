"""Open a Checkout Session that subscribes a customer to a plan."""

from __future__ import annotations

from tollgate.domain.errors import InvalidRequest, TollgateError
from tollgate.domain.subscriptions import (
    TRIAL_END_BEHAVIORS,
    find_plan,
    is_live,
    request_id,
    trial_days_for,
)
from tollgate.services.customers import (
    APP_ID_KEY,
    check_url,
    current_subscription,
    live_subscription,
)
from tollgate.services.deps import Deps
from tollgate.services.subscriptions.lookups import (
    application_fee,
    online_customer,
    price_ids,
    terms_for,
)
from tollgate.services.subscriptions.payment_rules import payment_method_types
from tollgate_client.views import CheckoutSession


class AlreadySubscribed(TollgateError):
    """The customer has a live subscription; change it instead of starting another."""

    type = "already_subscribed"
    status = 409


def start_checkout(
    deps: Deps,
    *,
    customer_id: str,
    plan: str,
    interval: str,
    success_url: str,
    cancel_url: str,
    trial_days: int | None = None,
    seats: int | None = None,
    idempotency_key: str | None = None,
) -> CheckoutSession:
    """Open a Checkout Session that subscribes the customer to a plan; its completion arrives
    as webhooks (`checkout.session.completed`), which flip the customer to the plan."""
    db, catalog, gateway, settings = deps.db, deps.catalog, deps.optional_stripe(), deps.settings
    check_url(success_url, "success_url")
    check_url(cancel_url, "cancel_url")
    chosen = find_plan(catalog, plan)
    if chosen.custom:
        raise InvalidRequest(
            f"plan {chosen.id!r} is sales-led (custom): it is not sold through Checkout; "
            "subscribe the customer with PUT /v1/customers/{id}/subscription",
            param="plan",
        )
    customer, target = online_customer(db, catalog, gateway, customer_id)
    terms = terms_for(catalog, customer, plan, interval, seats)
    days = trial_days_for(terms.plan, trial_days)
    # Checkout offers only the methods that may pay the plan's invoices (a trial's first paid
    # one included); a plan no method may pay at this amount is refused before Stripe is asked.
    methods = payment_method_types(settings, terms)
    with db.transaction() as session:
        mirrored = current_subscription(session, customer_id)
        if mirrored is not None and is_live(mirrored.status):
            raise _already_subscribed(customer_id, mirrored.plan, mirrored.status)
    live = live_subscription(target, customer.stripe_id)
    if live is not None:
        raise _already_subscribed(customer_id, live.plan, live.status)
    prices = price_ids(target, [terms.lookup_key, *terms.overage_lookup_keys.values()])
    lines: list[tuple[str, int | None]] = [(prices[terms.lookup_key], terms.quantity)]
    lines += [(prices[key], None) for key in terms.overage_lookup_keys.values()]
    asked = {
        "plan": terms.plan.id,
        "interval": terms.interval,
        "currency": terms.currency,
        "seats": terms.quantity,
        "trial_days": days,
        "payment_method_types": methods,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    key = request_id(idempotency_key, asked, customer.state_version)
    session_id, url = target.open_checkout_session(
        idempotency_key=f"checkout-create-{customer_id}-{key}",
        stripe_customer_id=customer.stripe_id,
        line_items=lines,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=customer_id,
        trial_days=days,
        trial_end_behavior=TRIAL_END_BEHAVIORS[settings.trial_end_behavior],
        automatic_tax=settings.stripe_automatic_tax,
        payment_method_types=methods,
        application_fee_percent=application_fee(settings, customer),
        metadata={APP_ID_KEY: customer_id, "tollgate_plan": terms.plan.id},
        # Buyers may type a code when the catalog has promotion codes for this plan (issue 20).
        allow_promotion_codes=any(
            coupon.promotion_codes and coupon.applies_to(terms.plan.id)
            for coupon in catalog.coupons.values()
        ),
    )
    return CheckoutSession(session_id, url)


def _already_subscribed(customer_id: str, plan: str | None, status: str) -> AlreadySubscribed:
    return AlreadySubscribed(
        f"customer {customer_id!r} already has a subscription (plan {plan}, {status}); "
        "change it with PUT /v1/customers/{id}/subscription or the Customer Portal",
        param="plan",
    )
