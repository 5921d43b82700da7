"""The API's use cases over a Container: what each route does, without HTTP.

Each function takes a request the API's own models checked, calls one service with the
container as its `deps` (services/deps.py: database, catalog, Stripe gateway, settings,
clock), does what the route does after it (this process's cached decisions dropped at once),
and returns the service's view. The routes answer the view's JSON; the in-process client
(`LocalTollgate`) returns the view itself, so the two cannot wire a service differently.

Entitlement reads have no function here: routes, the fast path and the client all ask the
container's cache (`app.entitlements`) directly, the one place they are answered from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from tollgate.api.schemas import (
    AlertCreate,
    AutoTopupPut,
    CheckoutCreate,
    ConsumeCreate,
    CreditAllowancePut,
    CreditCheckoutCreate,
    CreditGrantCreate,
    CreditsQuery,
    CustomerCreate,
    CustomerUpdate,
    PortalCreate,
    RefundCreate,
    ReservationCommit,
    ReservationCreate,
    SpendCapPut,
    SubscriptionPut,
    UsageBatch,
    UsageVoid,
)
from tollgate.bootstrap import Container
from tollgate.services import (
    credits,
    customers,
    page_access,
    refunds,
    spend_caps,
    topups,
    usage,
)
from tollgate.services.portal_config import ensure_portal_configuration
from tollgate.services.subscriptions import canceling, changing, checkout, reading
from tollgate.services.usage import alerts, corrections, reservations
from tollgate_client.views import CheckoutSession, CreditsView, CustomerView, SubscriptionView

P = ParamSpec("P")
R = TypeVar("R")


def _forgets_customer(
    operation: Callable[Concatenate[Container, str, P], R],
) -> Callable[Concatenate[Container, str, P], R]:
    """Drop this process's cached decisions for the customer once `operation` changed it, so
    its next check answers from the change, not the feed's next look."""

    @functools.wraps(operation)
    def run(app: Container, customer_id: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result = operation(app, customer_id, *args, **kwargs)
        app.entitlements.forget([customer_id])
        return result

    return run


# -- customers -------------------------------------------------------------------------------


def create_customer(app: Container, body: CustomerCreate) -> customers.CreatedCustomer:
    return customers.create_customer(
        app,
        new=customers.NewCustomer(**body.model_dump()),
    )


def get_customer(app: Container, customer_id: str) -> CustomerView:
    return customers.get_customer(app, customer_id=customer_id)


def update_customer(
    app: Container, customer_id: str, body: CustomerUpdate, *, idempotency_key: str | None
) -> CustomerView:
    changes = customers.CustomerChanges(
        **body.model_dump(), fields=frozenset(body.model_fields_set)
    )
    return customers.update_customer(
        app,
        customer_id=customer_id,
        changes=changes,
        idempotency_key=idempotency_key,
    )


def open_portal(
    app: Container, customer_id: str, body: PortalCreate, *, idempotency_key: str | None
) -> str:
    catalog = app.catalog
    return customers.open_portal(
        app,
        customer_id=customer_id,
        return_url=body.return_url,
        idempotency_key=idempotency_key,
        # The Portal follows the catalog (issue 20).
        configuration=lambda gateway: ensure_portal_configuration(
            catalog=catalog,
            gateway=gateway,
            proration_behavior=app.settings.immediate_proration_behavior,
            card_limits=app.settings.card_limits,
        ),
    )


def open_billing_session(app: Container, customer_id: str, *, base_url: str) -> dict[str, str]:
    """A signed link to the customer's billing page: `{customer, url, expires_at}`."""
    link = page_access.open_billing_link(
        app,
        customer_id=customer_id,
        base_url=base_url,
    )
    return link.to_json()


# -- subscriptions ---------------------------------------------------------------------------


def start_checkout(
    app: Container, customer_id: str, body: CheckoutCreate, *, idempotency_key: str | None
) -> CheckoutSession:
    return checkout.start_checkout(
        app,
        customer_id=customer_id,
        idempotency_key=idempotency_key,
        **body.model_dump(),
    )


def get_subscription(app: Container, customer_id: str) -> SubscriptionView:
    return reading.get_subscription(app, customer_id=customer_id)


def change_subscription(
    app: Container, customer_id: str, body: SubscriptionPut, *, idempotency_key: str | None
) -> SubscriptionView:
    return changing.change_subscription(
        app,
        customer_id=customer_id,
        wanted=changing.SubscriptionRequest(**body.model_dump()),
        idempotency_key=idempotency_key,
    )


def cancel_subscription(
    app: Container, customer_id: str, *, at_period_end: bool, idempotency_key: str | None
) -> SubscriptionView:
    return canceling.cancel_subscription(
        app,
        customer_id=customer_id,
        at_period_end=at_period_end,
        idempotency_key=idempotency_key,
    )


def resume_subscription(
    app: Container, customer_id: str, *, idempotency_key: str | None
) -> SubscriptionView:
    return canceling.resume_subscription(
        app,
        customer_id=customer_id,
        idempotency_key=idempotency_key,
    )


# -- usage -----------------------------------------------------------------------------------


def record_usage(app: Container, batch: UsageBatch) -> usage.UsageReport:
    """Record the batch (in Redis first when TOLLGATE_REDIS_URL is set)."""
    enforce = app.settings.usage_enforce_limits
    report = usage.record_usage(
        db=app.db,
        catalog=app.catalog,
        clock=app.clock,
        events=batch.events,
        enforce_limits=enforce if batch.enforce_limits is None else batch.enforce_limits,
        grace=app.grace,
        counters=app.usage_counters,
    )
    app.entitlements.forget(report.customers)
    return report


def consume(app: Container, call: usage.ConsumeCall) -> usage.Consumed:
    """Decide and record one use in one step (in Redis first when TOLLGATE_REDIS_URL is set),
    committed with the other calls waiting at that moment (the process's consume writer)."""
    return app.consume_writer.consume_blocking(call)


def consume_call(customer_id: str, body: ConsumeCreate) -> usage.ConsumeCall:
    """The use a consume request asks for."""
    return usage.ConsumeCall(customer_id, body.feature, body.quantity, body.id)


def _usage(app: Container) -> reservations.Usage:
    return reservations.Usage(app.db, app.catalog, app.clock, app.grace, app.usage_counters)


@_forgets_customer
def create_reservation(
    app: Container, customer_id: str, body: ReservationCreate
) -> reservations.ReservationView:
    """Hold units against the customer's limit (in Redis first with TOLLGATE_REDIS_URL)."""
    return reservations.create_reservation(
        _usage(app),
        customer_id=customer_id,
        feature=body.feature,
        quantity=body.quantity,
        ttl_seconds=body.ttl_seconds,
        reservation_id=body.id,
    )


@_forgets_customer
def commit_reservation(
    app: Container, customer_id: str, reservation_id: str, body: ReservationCommit
) -> reservations.ReservationView:
    return reservations.commit_reservation(
        _usage(app), customer_id=customer_id, reservation_id=reservation_id, quantity=body.quantity
    )


@_forgets_customer
def release_reservation(
    app: Container, customer_id: str, reservation_id: str
) -> reservations.ReservationView:
    return reservations.release_reservation(
        _usage(app), customer_id=customer_id, reservation_id=reservation_id
    )


def get_reservation(
    app: Container, customer_id: str, reservation_id: str
) -> reservations.ReservationView:
    return reservations.get_reservation(
        app.db, customer_id=customer_id, reservation_id=reservation_id
    )


def void_usage(app: Container, body: UsageVoid, *, actor: str) -> corrections.VoidReport:
    """Take back usage events of the open period (in Redis too), with an audit row each."""
    report = corrections.void_usage(
        db=app.db,
        catalog=app.catalog,
        clock=app.clock,
        ids=body.ids,
        reason=body.reason,
        actor=actor,
        grace=app.grace,
        counters=app.usage_counters,
    )
    app.entitlements.forget(report.customers)
    return report


@_forgets_customer
def set_spend_cap(
    app: Container, customer_id: str, body: SpendCapPut, *, actor: str
) -> spend_caps.SpendCapView:
    return spend_caps.set_spend_cap(app, customer_id=customer_id, actor=actor, **body.model_dump())


def get_spend_cap(app: Container, customer_id: str) -> spend_caps.SpendCapView:
    return spend_caps.get_spend_cap(app, customer_id=customer_id)


def create_alert(app: Container, customer_id: str, body: AlertCreate) -> alerts.AlertView:
    return alerts.create_alert(
        app,
        customer_id=customer_id,
        feature=body.feature,
        kind=body.kind,
        threshold=body.threshold,
        alert_id=body.id,
    )


def list_alerts(app: Container, customer_id: str) -> list[alerts.AlertView]:
    return alerts.list_alerts(db=app.db, customer_id=customer_id)


def delete_alert(app: Container, customer_id: str, alert_id: str) -> None:
    alerts.delete_alert(db=app.db, customer_id=customer_id, alert_id=alert_id)


def set_auto_topup(app: Container, customer_id: str, body: AutoTopupPut) -> topups.AutoTopupView:
    return topups.set_auto_topup(app, customer_id=customer_id, **body.model_dump())


def get_usage(app: Container, customer_id: str) -> usage.CustomerUsage:
    return usage.get_usage(app, customer_id=customer_id)


# -- credits ---------------------------------------------------------------------------------


def list_credits(app: Container, customer_id: str, query: CreditsQuery) -> CreditsView:
    return credits.list_credits(db=app.db, customer_id=customer_id, limit=query.limit)


@_forgets_customer
def grant_credits(
    app: Container, customer_id: str, body: CreditGrantCreate, *, actor: str
) -> credits.GrantResult:
    return credits.grant_credits(app, customer_id=customer_id, actor=actor, **body.model_dump())


@_forgets_customer
def set_credit_allowance(app: Container, customer_id: str, body: CreditAllowancePut) -> int:
    return credits.set_credit_allowance(app, customer_id=customer_id, allowance=body.allowance)


def start_credit_checkout(
    app: Container, customer_id: str, body: CreditCheckoutCreate, *, idempotency_key: str | None
) -> CheckoutSession:
    return credits.start_credit_checkout(
        app, customer_id=customer_id, idempotency_key=idempotency_key, **body.model_dump()
    )


# -- refunds (issue 21) -----------------------------------------------------------------------


def refund_payment(
    app: Container,
    customer_id: str,
    body: RefundCreate,
    *,
    idempotency_key: str | None,
    actor: str,
) -> tuple[refunds.RefundView, bool]:
    return refunds.refund_payment(
        app,
        customer_id=customer_id,
        wanted=refunds.RefundRequest(
            invoice=body.invoice,
            charge=body.charge,
            amount_minor=body.amount.amount if body.amount else None,
            currency=body.amount.currency if body.amount else None,
            reason=body.reason,
        ),
        idempotency_key=idempotency_key,
        actor=actor,
    )
