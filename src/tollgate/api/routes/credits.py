"""Credits: the balance and its entries, support grants, the overdraft allowance, buying packs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import timestamp_json
from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.services.api_keys import Principal
from tollgate.services.credits import (
    CreditEntryView,
    CreditsView,
    grant_credits,
    list_credits,
    set_credit_allowance,
    start_credit_checkout,
)
from tollgate.stripe.gateway import StripeGateway

router = APIRouter(prefix="/v1/customers", tags=["credits"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreditGrantCreate(_Body):
    amount: StrictInt = Field(description="Whole credits to grant (1 or more).")
    reason: str
    idempotency_key: str = Field(description="The same key again grants nothing more.")
    expires_at: AwareDatetime | None = Field(None, description="When unspent credits expire.")


class CreditAllowancePut(_Body):
    allowance: StrictInt = Field(description="How far below zero the balance may go.")


class CreditCheckoutCreate(_Body):
    pack: str
    success_url: str
    cancel_url: str


def entry_json(entry: CreditEntryView) -> dict[str, Any]:
    """Return a credits entry in the API's shape."""
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": entry.amount,
        "reason": entry.reason,
        "idempotency_key": entry.idempotency_key,
        "actor": entry.actor,
        "created": timestamp_json(entry.created),
        "expires_at": timestamp_json(entry.expires_at),
        "remaining": entry.remaining,
    }


def credits_json(view: CreditsView) -> dict[str, Any]:
    """Return a customer's credits in the API's shape."""
    return {
        "customer": view.customer_id,
        "balance": view.balance,
        "allowance": view.allowance,
        "entries": [entry_json(entry) for entry in view.entries],
    }


@router.get("/{customer_id}/credits", dependencies=[Depends(read_scope)])
def get_credits(
    customer_id: str,
    app: Container = Depends(container),
    limit: int = Query(100, ge=1, le=1000, description="How many entries, newest first."),
) -> dict[str, Any]:
    """The credits balance, the overdraft allowance and the newest entries."""
    return credits_json(list_credits(db=app.db, customer_id=customer_id, limit=limit))


@router.post("/{customer_id}/credits")
def post_credits(
    customer_id: str,
    body: CreditGrantCreate,
    app: Container = Depends(container),
    principal: Principal = Depends(write_scope),
) -> JSONResponse:
    """Grant credits (support, promotion), once per `idempotency_key`."""
    result = grant_credits(
        db=app.db,
        clock=app.clock,
        customer_id=customer_id,
        amount=body.amount,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
        actor=f"api:{principal.name}",
        expires_at=body.expires_at,
    )
    # This process answers the next check from the new balance, not the feed's next look.
    app.entitlements.forget([customer_id])
    return JSONResponse(entry_json(result.entry), status_code=201 if result.created else 200)


@router.put("/{customer_id}/credits/allowance", dependencies=[Depends(write_scope)])
def put_credit_allowance(
    customer_id: str, body: CreditAllowancePut, app: Container = Depends(container)
) -> dict[str, int]:
    """Set how far below zero the customer's credits may go."""
    allowance = set_credit_allowance(
        db=app.db, clock=app.clock, customer_id=customer_id, allowance=body.allowance
    )
    app.entitlements.forget([customer_id])
    return {"allowance": allowance}


@router.post("/{customer_id}/credits/checkout", dependencies=[Depends(write_scope)])
def post_credit_checkout(
    customer_id: str,
    body: CreditCheckoutCreate,
    app: Container = Depends(container),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> dict[str, str]:
    """A payment-mode Checkout Session for a credit pack: `{session_id, url}`."""
    gateway: StripeGateway | None
    try:
        gateway = app.stripe
    except ConfigError:
        gateway = None
    checkout = start_credit_checkout(
        db=app.db,
        catalog=app.catalog,
        gateway=gateway,
        customer_id=customer_id,
        pack=body.pack,
        success_url=body.success_url,
        cancel_url=body.cancel_url,
        idempotency_key=idempotency_key,
    )
    return {"session_id": checkout.session_id, "url": checkout.url}
