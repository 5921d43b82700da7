"""Credits: the balance and its entries, support grants, the overdraft allowance, buying packs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_actor, write_scope
from tollgate.api.responses import created_or_repeated
from tollgate.api.schemas import (
    CreditAllowancePut,
    CreditCheckoutCreate,
    CreditGrantCreate,
    CreditsQuery,
)
from tollgate.bootstrap import Container

router = APIRouter(prefix="/v1/customers", tags=["credits"])


@router.get("/{customer_id}/credits", dependencies=[Depends(read_scope)])
def get_credits(
    customer_id: str,
    query: Annotated[CreditsQuery, Query()],
    app: Container = Depends(container),
) -> dict[str, Any]:
    """The credits balance, the overdraft allowance and the newest entries."""
    return operations.list_credits(app, customer_id, query).to_json()


@router.post(
    "/{customer_id}/credits",
    status_code=201,
    responses={200: {"description": "The same idempotency_key again: the grant made before."}},
)
def post_credits(
    customer_id: str,
    body: CreditGrantCreate,
    app: Container = Depends(container),
    actor: str = Depends(write_actor),
) -> JSONResponse:
    """Grant credits (support, promotion), once per `idempotency_key`."""
    result = operations.grant_credits(app, customer_id, body, actor=actor)
    return created_or_repeated(result.entry.to_json(), created=result.created)


@router.put("/{customer_id}/credits/allowance", dependencies=[Depends(write_scope)])
def put_credit_allowance(
    customer_id: str, body: CreditAllowancePut, app: Container = Depends(container)
) -> dict[str, int]:
    """Set how far below zero the customer's credits may go."""
    return {"allowance": operations.set_credit_allowance(app, customer_id, body)}


@router.post("/{customer_id}/credits/checkout", dependencies=[Depends(write_scope)])
def post_credit_checkout(
    customer_id: str,
    body: CreditCheckoutCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> dict[str, str]:
    """A payment-mode Checkout Session for a credit pack: `{session_id, url}`."""
    checkout = operations.start_credit_checkout(
        app, customer_id, body, idempotency_key=idempotency_key
    )
    return checkout.to_json()
