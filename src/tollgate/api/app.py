"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from tollgate import __version__
from tollgate.api import errors
from tollgate.api.fastpath import EntitlementFastPath
from tollgate.api.middleware import BodyLimit, Metrics
from tollgate.api.routes import (
    api_keys,
    catalog,
    credits,
    customers,
    deals,
    dev,
    entitlements,
    health,
    plans,
    usage,
    webhooks,
)
from tollgate.bootstrap import Container


def create_app(container: Container, *, fast_paths: bool = True) -> FastAPI:
    """The API over `container`; one app per process.

    `fast_paths=False` leaves out the ASGI layers that answer webhooks and entitlement reads
    before FastAPI's stack, so the routes they shadow answer everything (a test compares both).
    """
    app = FastAPI(
        title="Tollgate",
        version=__version__,
        description="Billing, entitlements and usage metering for SaaS products on Stripe.",
    )
    app.state.container = container
    errors.install(app)
    # Routes are matched in order and each one tried costs a few microseconds: the hot paths
    # (Stripe's deliveries, entitlement checks, usage) come first. No two routes share a path.
    app.include_router(webhooks.router)
    app.include_router(entitlements.router)
    app.include_router(usage.router)
    app.include_router(health.router)
    app.include_router(catalog.router)
    app.include_router(api_keys.router)
    app.include_router(customers.router)
    app.include_router(credits.router)
    app.include_router(plans.router)
    app.include_router(deals.router)
    if container.settings.env == "dev":
        app.include_router(dev.router)
    app.add_middleware(Metrics)
    app.add_middleware(BodyLimit, limit=container.settings.max_body_bytes)
    if fast_paths:
        # Stripe's deliveries are taken before FastAPI's stack too (see routes/webhooks.py).
        app.add_middleware(webhooks.StripeWebhookFastPath, container=container)
        # Outermost of ours: valid entitlement reads are answered before the rest of the stack.
        app.add_middleware(EntitlementFastPath, container=container)
    return app
