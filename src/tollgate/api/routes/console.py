"""The JSON behind the operator console: lists, a customer's timeline, the overview's figures,
Stripe events and the outbox (with replay and retry), reconciliation runs, API keys, fees.

The console's pages call the same services; nothing a page shows is computed only for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query

from tollgate.api.deps import container, read_scope, write_scope
from tollgate.bootstrap import Container
from tollgate.services import console, console_actions

router = APIRouter(prefix="/v1", tags=["console"])
Cursor = Query(None, description="`next_cursor` of the previous page.")
Limit = Query(50, ge=1, le=console.MAX_PAGE, description="Items per page.")


@router.get("/customers", dependencies=[Depends(read_scope)])
def list_customers(
    app: Container = Depends(container),
    q: str | None = Query(None, description="Search id, email, name or Stripe customer id."),
    plan: str | None = Query(None, description="Only customers on this plan."),
    status: str | None = Query(
        None, description=f"Only this status: {', '.join(console.CUSTOMER_STATUSES)}."
    ),
    currency: str | None = Query(None, description="Only customers billed in this currency."),
    offline: bool | None = Query(None, description="Only offline (true) or online customers."),
    over: int | None = Query(
        None, description="Only customers past this percentage of a limit this period (80)."
    ),
    trial_ends: int | None = Query(
        None, ge=1, le=366, description="Only trials ending within this many days."
    ),
    created_since: datetime | None = Query(None, description="Only customers created since."),
    ended_since: datetime | None = Query(
        None, description="Only customers whose subscription ended since (churn)."
    ),
    sort: str = Query("created", description="created, id, email or name."),
    order: str = Query("desc", description="asc or desc."),
    cursor: str | None = Cursor,
    limit: int = Limit,
) -> dict[str, Any]:
    """Customers, searched and filtered, one page at a time (`next_cursor`)."""
    query = console.CustomerQuery(
        search=q,
        plan=plan,
        status=status,
        currency=currency,
        offline=offline,
        over_percent=over,
        trial_ends_within_days=trial_ends,
        created_since=created_since,
        ended_since=ended_since,
        sort=sort,
        order=order,
    )
    page = console.list_customers(app, query=query, cursor=cursor, limit=limit)
    return page.to_json()


@router.get("/customers/{customer_id}/timeline", dependencies=[Depends(read_scope)])
def customer_timeline(
    customer_id: str,
    app: Container = Depends(container),
    cursor: str | None = Cursor,
    limit: int = Limit,
) -> dict[str, Any]:
    """Everything that happened to a customer, newest first: audit rows, Stripe events, usage
    thresholds crossed, emails and app webhooks (`kind` says which)."""
    return console.customer_timeline(
        db=app.db, customer_id=customer_id, cursor=cursor, limit=limit
    ).to_json()


@router.get("/summary", dependencies=[Depends(read_scope)])
def summary(app: Container = Depends(container)) -> dict[str, Any]:
    """The overview's figures: MRR and ARR by plan and currency (annual prices over 12, minor
    units), customers by status, trials ending this week, new and churned this month, failed
    payments, open disputes, webhook failures, usage sync lag, the last reconciliation."""
    return console.summarize(app).to_json()


@router.get("/events", dependencies=[Depends(read_scope)])
def list_events(
    app: Container = Depends(container),
    status: str | None = Query(None, description="pending, processing, succeeded, failed…"),
    type: str | None = Query(None, description="An event type; `invoice.*` matches a prefix."),
    customer: str | None = Query(None, description="Only events about this customer."),
    cursor: str | None = Cursor,
    limit: int = Limit,
) -> dict[str, Any]:
    """Stripe events as received, newest first."""
    return console.list_events(
        db=app.db, status=status, type_=type, customer_id=customer, cursor=cursor, limit=limit
    ).to_json()


@router.get("/events/{event_id}", dependencies=[Depends(read_scope)])
def get_event(event_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """One stored event, with the raw event Stripe sent."""
    detail = console.get_event(db=app.db, event_id=event_id)
    return {**detail.event.to_json(), "payload": detail.payload}


@router.post("/events/{event_id}/replay", dependencies=[Depends(write_scope)])
def replay_event(event_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """Apply a stored event again (harmless if applied before: newer state is kept)."""
    console.get_event(db=app.db, event_id=event_id)  # 404 for an unknown id
    result = console_actions.replay_event(app, event_id=event_id)
    detail = console.get_event(db=app.db, event_id=event_id)
    return {**detail.event.to_json(), "outcome": result.outcome, "error": result.error}


@router.get("/outbox", dependencies=[Depends(read_scope)])
def list_outbox(
    app: Container = Depends(container),
    kind: str | None = Query(None, description="email, app_webhook or usage."),
    status: str | None = Query(
        None, description="pending, claimed, sent, delivered, skipped, failed."
    ),
    customer: str | None = Query(None, description="Only this customer's."),
    cursor: str | None = Cursor,
    limit: int = Limit,
) -> dict[str, Any]:
    """Emails, app webhooks and usage reports to Stripe's meters, newest first, with their
    status and attempts. An email's id is `email_<n>`, a usage report's `usage_<n>`; an app
    webhook's is its event id."""
    page = console.list_outbox(
        db=app.db, kind=kind, status=status, customer_id=customer, cursor=cursor, limit=limit
    )
    return page.to_json()


@router.post("/outbox/{outbox_id}/retry", dependencies=[Depends(write_scope)])
def retry_outbox(outbox_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """Send a failed (or waiting) email, app webhook or usage report again at the worker's
    next run."""
    return console.retry_outbox_item(db=app.db, clock=app.clock, outbox_id=outbox_id).to_json()


@router.get("/reconciliations", dependencies=[Depends(read_scope)])
def list_reconciliations(
    app: Container = Depends(container),
    cursor: str | None = Cursor,
    limit: int = Query(20, ge=1, le=console.MAX_PAGE),
) -> dict[str, Any]:
    """Reconciliation runs, newest first, with their drift counts by kind."""
    return console.list_reconciliations(db=app.db, cursor=cursor, limit=limit).to_json()


@router.get("/api-keys", dependencies=[Depends(write_scope)])
def list_api_keys(app: Container = Depends(container)) -> dict[str, Any]:
    """Stored API keys (never their secrets), newest first."""
    return {"data": [key.to_json() for key in console.list_api_keys(db=app.db)]}


@router.delete("/api-keys/{key_id}", dependencies=[Depends(write_scope)])
def revoke_api_key(key_id: str, app: Container = Depends(container)) -> dict[str, Any]:
    """Revoke a key. This server refuses it at once, every other within 10 seconds (its key
    cache)."""
    return console.revoke_api_key(
        db=app.db, clock=app.clock, authenticator=app.authenticator, key_id=key_id
    ).to_json()


@router.get("/fees", dependencies=[Depends(read_scope)])
def payment_fees(
    app: Container = Depends(container),
    days: int = Query(30, ge=1, le=366, description="Charges of the last this many days."),
) -> dict[str, Any]:
    """What charges cost in processing fees, per customer and in total, by method (cards,
    ACH), and who would pay less by moving to ACH."""
    return console.payment_fees(
        db=app.db, clock=app.clock, settings=app.settings, days=days
    ).to_json()
