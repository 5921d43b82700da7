"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from tollgate import __version__, tracing
from tollgate.api import errors, openapi
from tollgate.api.consume_fastpath import ConsumeFastPath
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
from tollgate.console import usage_controls as console_usage_controls
from tollgate.console.pages import install_console
from tollgate.web import usage_controls as page_usage_controls
from tollgate.web.site import install_pages


def create_app(container: Container, *, fast_paths: bool = True) -> FastAPI:
    """The API over `container`; one app per process.

    `fast_paths=False` leaves out the ASGI layers that answer webhooks, consume calls and
    entitlement reads before FastAPI's stack, so the routes they shadow answer everything (a
    test compares both).
    """
    tracing.configure_tracing()  # OTLP export when the SDK and an endpoint are there
    app = FastAPI(
        title="Tollgate",
        version=__version__,
        description="Billing, entitlements and usage metering for SaaS products on Stripe.",
        docs_url=None,  # /docs and /redoc are served with their files (tollgate.web.api_docs)
        redoc_url=None,
        # Request spans (OpenTelemetry) once a tracer provider is configured; see tracing.py.
        telemetry=tracing.fastapi_telemetry(),
    )
    app.state.container = container
    errors.install(app)
    openapi.install(app)
    # Routes are matched in order and each one tried costs a few microseconds: the hot paths
    # (Stripe's deliveries, entitlement checks, usage) come first. No two routes share a path.
    for routes in (
        webhooks,
        entitlements,
        usage,
        health,
        catalog,
        api_keys,
        customers,
        customer_billing,
        credits,
        refunds,
        usage_controls,
        plans,
        deals,
        console,
    ):
        app.include_router(routes.router)
    install_pages(app)
    install_console(app)
    app.include_router(page_usage_controls.router)  # the spend cap and alerts, on both pages
    app.include_router(console_usage_controls.router)
    if container.settings.env == "dev":
        app.include_router(dev.router)
    app.add_middleware(Metrics)
    app.add_middleware(BodyLimit, limit=container.settings.max_body_bytes)
    if fast_paths:
        # Stripe's deliveries are taken before FastAPI's stack too (see routes/webhooks.py).
        app.add_middleware(webhooks.StripeWebhookFastPath, container=container)
        # Consume calls too (see api/consume_fastpath.py).
        app.add_middleware(ConsumeFastPath, container=container)
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
    app.add_middleware(Guard, traced=tracing.tracing())
    return app
