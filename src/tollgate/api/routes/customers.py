"""Customers, Checkout, the Customer Portal and subscriptions: each route calls one use case."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.responses import created_or_repeated
from tollgate.api.schemas import (
    CheckoutCreate,
    CustomerCreate,
    CustomerUpdate,
    PortalCreate,
    SubscriptionPut,
)
from tollgate.bootstrap import Container

router = APIRouter(prefix="/v1/customers", tags=["customers"])
IdempotencyKey = Header(
    None,
    alias="Idempotency-Key",
    description="Repeat a write with the same key to have it made once (in Stripe too).",
)


@router.post(
    "",
    dependencies=[Depends(write_scope)],
    status_code=201,
    responses={200: {"description": "The same request again: the customer it made before."}},
)
def post_customer(body: CustomerCreate, app: Container = Depends(container)) -> JSONResponse:
    """Create the billing customer for the app's organisation (idempotent on `id`)."""
    result = operations.create_customer(app, body)
    return created_or_repeated(result.customer.to_json(), created=result.created)


@router.get("/{customer_id}", dependencies=[Depends(read_scope)])
def get_customer_route(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The customer, with the plan and status its subscription gives it."""
    return operations.get_customer(app, customer_id).to_json()


@router.patch("/{customer_id}", dependencies=[Depends(write_scope)])
def patch_customer(
    customer_id: str,
    body: CustomerUpdate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Change email, name, billing address (for tax) or metadata, in Stripe too."""
    updated = operations.update_customer(app, customer_id, body, idempotency_key=idempotency_key)
    return updated.to_json()


@router.post("/{customer_id}/checkout", dependencies=[Depends(write_scope)])
def post_checkout(
    customer_id: str,
    body: CheckoutCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, str]:
    """A Stripe Checkout Session for a plan: `{session_id, url}`."""
    session = operations.start_checkout(app, customer_id, body, idempotency_key=idempotency_key)
    return session.to_json()


@router.post("/{customer_id}/portal", dependencies=[Depends(write_scope)])
def post_portal(
    customer_id: str,
    body: PortalCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, str]:
    """A Customer Portal session: `{url}`."""
    return {"url": operations.open_portal(app, customer_id, body, idempotency_key=idempotency_key)}


@router.get("/{customer_id}/subscription", dependencies=[Depends(read_scope)])
def get_subscription_route(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """The customer's subscription as Tollgate last heard from Stripe."""
    return operations.get_subscription(app, customer_id).to_json()


@router.put(
    "/{customer_id}/subscription",
    dependencies=[Depends(write_scope)],
    responses={
        202: {
            "description": "The card needs its holder: `status` is `action_required` "
            "and `url` the page where the customer confirms the payment (3-D Secure)."
        }
    },
)
def put_subscription(
    customer_id: str,
    body: SubscriptionPut,
    response: Response,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Subscribe directly, or change plan, interval or seats."""
    changed = operations.change_subscription(
        app, customer_id, body, idempotency_key=idempotency_key
    )
    if changed.url:
        response.status_code = 202
    return changed.to_json()


@router.delete("/{customer_id}/subscription", dependencies=[Depends(write_scope)])
def delete_subscription(
    customer_id: str,
    app: Container = Depends(container),
    at_period_end: bool = Query(False, description="Cancel when the period ends, not now."),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Cancel now, or at period end (status `canceling` until then)."""
    canceled = operations.cancel_subscription(
        app, customer_id, at_period_end=at_period_end, idempotency_key=idempotency_key
    )
    return canceled.to_json()


@router.post("/{customer_id}/subscription/resume", dependencies=[Depends(write_scope)])
def post_resume(
    customer_id: str,
    app: Container = Depends(container),
    idempotency_key: str | None = IdempotencyKey,
) -> dict[str, Any]:
    """Undo a cancel at period end (and a pending downgrade) before the period ends."""
    resumed = operations.resume_subscription(app, customer_id, idempotency_key=idempotency_key)
    return resumed.to_json()
