"""A server span per HTTP request, when OpenTelemetry is installed (see `tollgate.tracing`)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.tracing import TRACER_NAME, trace

try:
    from opentelemetry import propagate
except ImportError:  # the optional extra is not installed: the middleware is never added
    propagate = None  # type: ignore[assignment]


class Tracing:
    """ASGI middleware: a server span per request, continuing the caller's `traceparent`, named
    by method and route template, with the status and Tollgate's request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or trace is None:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        tracer = trace.get_tracer(TRACER_NAME)
        with tracer.start_as_current_span(
            scope["method"],
            context=propagate.extract(carrier) if propagate else None,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as current:

            async def noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        current.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, noting_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    current.update_name(f"{scope['method']} {route}")
                    current.set_attribute("http.route", route)
                request_id = scope.get("state", {}).get("request_id")
                if request_id:
                    current.set_attribute("tollgate.request_id", request_id)
