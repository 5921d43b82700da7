"""Stripe's webhook endpoint: checked by signature (no API key), stored first, then applied."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tollgate.api.deps import container
from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.services.webhooks import (
    WebhookProcessingFailed,
    process_stripe_event,
    receive_stripe_event,
)
from tollgate.stripe.gateway import StripeGateway

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/stripe")
async def post_stripe_webhook(
    request: Request, app: Container = Depends(container)
) -> JSONResponse:
    """Take one Stripe event: 200 once applied (or already applied), 500 so Stripe retries."""
    # The signature covers the exact bytes Stripe sent, so read them before anything parses.
    body = await request.body()
    signature = request.headers.get("stripe-signature")
    return await run_in_threadpool(_receive_and_apply, app, body, signature)


def _receive_and_apply(app: Container, body: bytes, signature: str | None) -> JSONResponse:
    received = receive_stripe_event(
        db=app.db, raw_body=body, signature_header=signature, settings=app.settings, clock=app.clock
    )
    if not received.needs_processing:
        status = "duplicate" if received.duplicate else received.status
        return JSONResponse({"received": True, "id": received.event_id, "status": status})
    result = process_stripe_event(
        db=app.db, gateway=_gateway(app), event_id=received.event_id, clock=app.clock
    )
    if result.failed:
        raise WebhookProcessingFailed(
            f"event {received.event_id} is stored but could not be applied; "
            "it will be retried (see `tollgate events list --status failed`)"
        )
    return JSONResponse({"received": True, "id": received.event_id, "status": result.outcome})


def _gateway(app: Container) -> StripeGateway | None:
    # Most events need no call to Stripe, so a missing key fails only the events that do.
    try:
        return app.stripe
    except ConfigError:
        return None
