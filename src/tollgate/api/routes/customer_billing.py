"""The JSON behind the billing page: a signed link to it, invoices, usage history, previews.

Each route calls one use case; the billing page reads the same ones (services/customer_billing).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, Field
from starlette.concurrency import run_in_threadpool

from tollgate.api import operations
from tollgate.api.deps import container, read_scope, write_scope
from tollgate.api.schemas import RequestBody
from tollgate.bootstrap import Container
from tollgate.services import bank_transfers, customer_billing

router = APIRouter(prefix="/v1/customers", tags=["billing page"])


class SubscriptionPreviewCreate(RequestBody):
    plan: str = Field(description="The plan to move to (a catalog plan id).")
    interval: str = Field(description="month or year.")
    seats: int | None = Field(None, ge=1, description="Seats, for a per-seat plan.")


@router.post("/{customer_id}/billing-session", dependencies=[Depends(write_scope)])
def post_billing_session(
    customer_id: str, request: Request, app: Container = Depends(container)
) -> dict[str, str]:
    """A signed link to the customer's billing page, valid for TOLLGATE_BILLING_SESSION_TTL
    seconds (15 minutes by default): `{customer, url, expires_at}`. Opening it sets an
    HttpOnly cookie for this customer's pages only; send the customer there, don't store it."""
    return operations.open_billing_session(app, customer_id, base_url=str(request.base_url))


@router.get("/{customer_id}/invoices", dependencies=[Depends(read_scope)])
def get_invoices(
    customer_id: str,
    app: Container = Depends(container),
    limit: int = Query(20, ge=1, le=100, description="Invoices per page."),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
) -> dict[str, Any]:
    """The customer's invoices, newest first: number, status, total, amount due and paid,
    period, and links to the hosted invoice page and its PDF. `{data, has_more, next_cursor}`."""
    page = customer_billing.list_invoices(
        db=app.db, customer_id=customer_id, limit=limit, cursor=cursor
    )
    return page.to_json()


@router.get("/{customer_id}/bank-transfers", dependencies=[Depends(read_scope)])
def get_bank_transfers(customer_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """What a customer paying by bank transfer has to send: `waiting`, each payment still
    waiting for money (amount, received, remaining, the account to pay and the reference to
    quote), and `cash_balance`, money received that no invoice took yet (it pays the next one)."""
    return bank_transfers.get_bank_transfers(db=app.db, customer_id=customer_id).to_json()


@router.get("/{customer_id}/usage/history", dependencies=[Depends(read_scope)])
async def get_usage_history(
    customer_id: str,
    app: Container = Depends(container),
    meter: str = Query(description="A metered feature of the catalog."),
    granularity: Literal["hour", "day"] = Query("day"),
    start: AwareDatetime | None = Query(None, alias="from", description="Default: period start."),
    end: AwareDatetime | None = Query(None, alias="to", description="Default: period end."),
) -> dict[str, Any]:
    """A meter's recorded usage summed per hour or day over [from, to) (default: this
    billing period), every bucket present (0 when nothing was recorded)."""
    history = await run_in_threadpool(
        customer_billing.usage_history,
        app,
        customer_id=customer_id,
        meter=meter,
        granularity=granularity,
        start=start,
        end=end,
    )
    return history.to_json()


@router.post("/{customer_id}/subscription/preview", dependencies=[Depends(write_scope)])
def post_subscription_preview(
    customer_id: str, body: SubscriptionPreviewCreate, app: Container = Depends(container)
) -> dict[str, Any]:
    """What a plan, interval or seat change would invoice, from Stripe's invoice preview,
    before anything changes: `timing` (now, period_end, nothing, or checkout when there is no
    subscription), `due_now`, `proration`, `next_invoice` and its date, `renewal` (the new
    price per period), and the preview's `lines`."""
    preview = customer_billing.preview_subscription_change(
        app, customer_id=customer_id, plan=body.plan, interval=body.interval, seats=body.seats
    )
    return preview.to_json()
