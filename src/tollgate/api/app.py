"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from tollgate import __version__
from tollgate.api import errors, openapi
from tollgate.api.fastpath import EntitlementFastPath
from tollgate.api.guard import Guard
from tollgate.api.middleware import AccessLog, BodyLimit, Metrics
from tollgate.api.ratelimit import RateLimit
from tollgate.api.routes import (
    api_keys,
    catalog,
    console,
    credits,
    customer_billing,
    customers,
    deals,
    dev,
    entitlements,
    health,
    plans,
    refunds,
    usage,
    usage_controls,
    webhooks,
)
from tollgate.bootstrap import Container
from tollgate.console.pages import install_console
from tollgate.web.site import install_pages


def create_app(container: Container, *, fast_paths: bool = True) -> FastAPI:
    """The API over `container`; one app per process.

    `fast_paths=False` leaves out the ASGI layers that answer webhooks and entitlement reads
    before FastAPI's stack, so the routes they shadow answer everything (a test compares both).
    """
    app = FastAPI(
        title="Tollgate",
        version=__version__,
        description="Billing, entitlements and usage metering for SaaS products on Stripe.",
        docs_url=None,  # /docs and /redoc are served with their files (tollgate.web.api_docs)
        redoc_url=None,
    )
    app.state.container = container
    errors.install(app)
    openapi.install(app)
    # Routes are matched in order and each one tried costs a few microseconds: the hot paths
    # (Stripe's deliveries, entitlement checks, usage) come first. No two routes share a path.
    app.include_router(webhooks.router)
    app.include_router(entitlements.router)
    app.include_router(usage.router)
    app.include_router(health.router)
    app.include_router(catalog.router)
    app.include_router(api_keys.router)
    app.include_router(customers.router)
    app.include_router(customer_billing.router)
    app.include_router(credits.router)
    app.include_router(refunds.router)
    app.include_router(usage_controls.router)
    app.include_router(plans.router)
    app.include_router(deals.router)
    app.include_router(console.router)
    install_pages(app)
    install_console(app)
    if container.settings.env == "dev":
        app.include_router(dev.router)
    app.add_middleware(Metrics)
    app.add_middleware(BodyLimit, limit=container.settings.max_body_bytes)
    if fast_paths:
        # Stripe's deliveries are taken before FastAPI's stack too (see routes/webhooks.py).
        app.add_middleware(webhooks.StripeWebhookFastPath, container=container)
        # Outermost of ours: valid entitlement reads are answered before the rest of the stack.
        app.add_middleware(EntitlementFastPath, container=container)
    settings = container.settings
    app.add_middleware(
        RateLimit,
        per_key=settings.rate_limit_per_key,
        per_address=settings.rate_limit_per_address,
        webhooks=settings.rate_limit_webhooks,
    )
    if settings.log_format == "json":
        app.add_middleware(AccessLog)  # one line per request: method, route, status, duration
    # Outermost: a request id (the caller's X-Request-Id or a new one, carried by every log line
    # of the request), safe headers, and every unexpected failure in the error shape.
    app.add_middleware(Guard)
    return app
