"""Customers, Checkout, the Customer Portal and subscriptions: each route calls one service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import (
    CheckoutCreate,
    CustomerCreate,
    CustomerUpdate,
    PortalCreate,
    SubscriptionPut,
    customer_json,
    subscription_json,
)
from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.services.customers import (
    CustomerChanges,
    NewCustomer,
    create_customer,
    get_customer,
    open_portal,
    update_customer,
)
from tollgate.services.subscriptions import (
    SubscriptionRequest,
    cancel_subscription,
    change_subscription,
    get_subscription,
    resume_subscription,
    start_checkout,
)
from tollgate.stripe.gateway import StripeGateway

router = APIRouter(prefix="/v1/customers", tags=["customers"])
IdempotencyKey = Header(
    None,
    alias="Idempotency-Key",
    description="Repeat a write with the same key to have it made once (in Stripe too).",
)


def _gateway(app: Container) -> StripeGateway | None:
    # Offline customers need no Stripe key; the services refuse what does need one.
    try:
        return app.stripe
    except ConfigError:
        return None


@router.post("", dependencies=[Depends(write_scope)])
def post_customer(body: CustomerCreate, app: Container = Depends(container)) -> JSONResponse:
    """Create the billing customer for the app's organisation (idempotent on `id`)."""
    result = create_customer(
        db=app.db,
        catalog=app.catalog,
        gateway=_gateway(app),
        settings=app.settings,
        clock=app.clock,
        new=NewCustomer(**body.model_dump()),
    )
    return JSONResponse(customer_json(result.customer), status_code=201 if result.created else 200)


@router.get("/{customer_id}", dependencies=[Depends(read_scope)])
def get_customer_route(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The customer, with the plan and status its subscription gives it."""
    return customer_json(get_customer(db=app.db, catalog=app.catalog, customer_id=customer_id))


@router.patch("/{customer_id}", dependencies=[Depends(write_scope)])
def patch_customer(
    customer_id: str,
    body: CustomerUpdate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Change email, name, billing address (for tax) or metadata, in Stripe too."""
    changes = CustomerChanges(
        email=body.email,
        name=body.name,
        address=body.address,
        metadata=body.metadata,
        fields=frozenset(body.model_fields_set),
    )
    return customer_json(
        update_customer(
            db=app.db,
            catalog=app.catalog,
            gateway=_gateway(app),
            clock=app.clock,
            customer_id=customer_id,
            changes=changes,
            idempotency_key=idempotency_key,
        )
    )


@router.post("/{customer_id}/checkout", dependencies=[Depends(write_scope)])
def post_checkout(
    customer_id: str,
    body: CheckoutCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, str]:
    """A Stripe Checkout Session for a plan: `{session_id, url}`."""
    session = start_checkout(
        db=app.db,
        catalog=app.catalog,
        gateway=_gateway(app),
        settings=app.settings,
        customer_id=customer_id,
        plan=body.plan,
        interval=body.interval,
        success_url=body.success_url,
        cancel_url=body.cancel_url,
        trial_days=body.trial_days,
        seats=body.seats,
        idempotency_key=idempotency_key,
    )
    return {"session_id": session.session_id, "url": session.url}


@router.post("/{customer_id}/portal", dependencies=[Depends(write_scope)])
def post_portal(
    customer_id: str,
    body: PortalCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, str]:
    """A Customer Portal session: `{url}`."""
    url = open_portal(
        db=app.db,
        gateway=_gateway(app),
        customer_id=customer_id,
        return_url=body.return_url,
        idempotency_key=idempotency_key,
    )
    return {"url": url}


@router.get("/{customer_id}/subscription", dependencies=[Depends(read_scope)])
def get_subscription_route(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The customer's subscription as Tollgate last heard from Stripe."""
    return subscription_json(
        get_subscription(db=app.db, catalog=app.catalog, customer_id=customer_id)
    )


@router.put("/{customer_id}/subscription", dependencies=[Depends(write_scope)])
def put_subscription(
    customer_id: str,
    body: SubscriptionPut,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Subscribe directly, or change plan, interval or seats."""
    return subscription_json(
        change_subscription(
            db=app.db,
            catalog=app.catalog,
            gateway=_gateway(app),
            settings=app.settings,
            clock=app.clock,
            customer_id=customer_id,
            wanted=SubscriptionRequest(**body.model_dump()),
            idempotency_key=idempotency_key,
        )
    )


@router.delete("/{customer_id}/subscription", dependencies=[Depends(write_scope)])
def delete_subscription(
    customer_id: str,
    app: Container = Depends(container),
    at_period_end: bool = Query(False, description="Cancel when the period ends, not now."),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Cancel now, or at period end (status `canceling` until then)."""
    return subscription_json(
        cancel_subscription(
            db=app.db,
            catalog=app.catalog,
            gateway=_gateway(app),
            clock=app.clock,
            customer_id=customer_id,
            at_period_end=at_period_end,
            idempotency_key=idempotency_key,
        )
    )


@router.post("/{customer_id}/subscription/resume", dependencies=[Depends(write_scope)])
def post_resume(
    customer_id: str,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Undo a cancel at period end (and a pending downgrade) before the period ends."""
    return subscription_json(
        resume_subscription(
            db=app.db,
            catalog=app.catalog,
            gateway=_gateway(app),
            clock=app.clock,
            customer_id=customer_id,
            idempotency_key=idempotency_key,
        )
    )
