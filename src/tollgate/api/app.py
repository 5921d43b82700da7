"""The FastAPI application."""

from __future__ import annotations

from inspect import getattr_static
from types import FunctionType, MethodType
from typing import cast

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

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


class TollgateApi(FastAPI):
    """FastAPI with Tollgate's outer layers (the Guard, the rate limit, the fast paths) served in
    front of its own stack when FastAPI makes no request spans.

    Most requests are answered by a fast path (an entitlement check, a consume call, a Stripe
    delivery). Inside FastAPI's stack, each also went through FastAPI's own outer layers
    (ServerErrorMiddleware, its exception telemetry, its app body limit), none of which acted
    on an HTTP request: the Guard, inside them, answers every exception. In front, they take
    every request first and hand FastAPI the rest; FastAPI's text 500 is left out of its
    stack, so a route's failure still reaches the Guard and is answered in the error shape.
    With request spans, the layers are FastAPI's outermost middleware, inside the span.
    """

    _front: ASGIApp | None = None

    def serve_before(self, layers: list[Middleware], *, spans: bool) -> None:
        """Serve `layers` (outermost first) before FastAPI's stack, or as its outermost
        middleware when FastAPI makes request `spans` (they must cover them)."""
        if spans:
            self.user_middleware[:0] = layers
            return
        app: ASGIApp = super().__call__
        for cls, args, kwargs in reversed(layers):
            app = _bound_call(cls(app, *args, **kwargs))
        self._front = app

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self._front is not None and isinstance(stack, ServerErrorMiddleware):
            return stack.app  # the Guard in front answers every failure, in the error shape
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is None:
            await super().__call__(scope, receive, send)
        else:
            await self._front(scope, receive, send)


def _bound_call(layer: ASGIApp) -> ASGIApp:
    """What the layer outside `layer` calls on every request: its plain `awaitable_for` (no
    coroutine of its own for a request it lets by), else its bound `__call__`.

    Calling an instance goes through its type's call slot: an argument tuple and a method
    lookup per call. A bound method is called as a function is, without either.
    """
    plain = getattr(layer, "awaitable_for", None)
    if plain is not None:
        return cast(ASGIApp, plain)
    call = getattr_static(type(layer), "__call__", None)
    return MethodType(call, layer) if isinstance(call, FunctionType) else layer


def create_app(container: Container, *, fast_paths: bool = True) -> TollgateApi:
    """The API over `container`; one app per process.

    `fast_paths=False` leaves out the ASGI layers that answer webhooks, consume calls and
    entitlement reads before FastAPI's stack, so the routes they shadow answer everything (a
    test compares both).
    """
    tracing.configure_tracing()  # OTLP export when the SDK and an endpoint are there
    traced = tracing.tracing()  # FastAPI makes request spans (tracing.fastapi_telemetry)
    app = TollgateApi(
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
    settings = container.settings
    # Outermost first: a request id (the caller's X-Request-Id or a new one, carried by every
    # log line of the request), safe headers, and every unexpected failure in the error shape;
    # one line per request (method, route, status, duration) in JSON logs; the rate limit; then
    # the fast paths: valid entitlement reads, consume calls and Stripe's deliveries are
    # answered before FastAPI's routing (see api/fastpath.py, api/consume_fastpath.py and
    # routes/webhooks.py).
    front = [Middleware(Guard, traced=traced)]
    if settings.log_format == "json":
        front.append(Middleware(AccessLog))
    front.append(
        Middleware(
            RateLimit,
            per_key=settings.rate_limit_per_key,
            per_address=settings.rate_limit_per_address,
            webhooks=settings.rate_limit_webhooks,
        )
    )
    if fast_paths:
        front += [
            Middleware(EntitlementFastPath, container=container),
            Middleware(ConsumeFastPath, container=container),
            Middleware(webhooks.StripeWebhookFastPath, container=container),
        ]
    app.serve_before(front, spans=traced)
    return app
