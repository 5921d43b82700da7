"""Refunds: give back (part of) a customer's charge or paid invoice through Stripe."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from tollgate.api import operations
from tollgate.api.deps import container, write_actor
from tollgate.api.responses import created_or_repeated
from tollgate.api.schemas import RefundCreate
from tollgate.bootstrap import Container

router = APIRouter(prefix="/v1/customers", tags=["refunds"])


@router.post(
    "/{customer_id}/refunds",
    status_code=201,
    responses={200: {"description": "The same Idempotency-Key again: the refund made before."}},
)
def post_refund(
    customer_id: str,
    body: RefundCreate,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        description="Repeat with the same key to refund once, whatever happens in between.",
    ),
) -> JSONResponse:
    """Refund a charge, or a paid invoice (Stripe makes a credit note); audited."""
    view, new = operations.refund_payment(
        app, customer_id, body, idempotency_key=idempotency_key, actor=actor
    )
    return created_or_repeated(view.to_json(), created=new)
