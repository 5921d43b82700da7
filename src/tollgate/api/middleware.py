"""ASGI middleware: refuse oversized bodies, time every request for /metrics, give it an id."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.errors import error_response
from tollgate.logs import REQUEST_ID, request_id_from
from tollgate.metrics import HTTP_LATENCY, HTTP_REQUESTS

access_log = logging.getLogger("tollgate.access")


class BodyTooLarge(Exception):
    pass


def body_too_large(limit: int) -> JSONResponse:
    """The 413 answer to a body over `limit` bytes, declared or streamed."""
    message = f"the request body is larger than {limit} bytes"
    return error_response(413, "request_too_large", message)


class BodyLimit:
    """Answer 413 to a body over `limit` bytes, declared or streamed, before any route runs."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await body_too_large(self.limit)(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return received

        async def tracking_send(sent: Message) -> None:
            nonlocal started
            if sent["type"] == "http.response.start":
                started = True
            await send(sent)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await body_too_large(self.limit)(scope, receive, send)


class Metrics:
    """Count and time requests by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)  # type: ignore[arg-type]
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(template).observe(time.perf_counter() - started)


class RequestContext:
    """Give each request an id (the caller's `X-Request-Id`, or a new one), answered in the same
    header and carried by every log line of the request; with `log_requests`, log one line per
    request (method, route, status, duration)."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = False) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        request_id = request_id_from(given)
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status = 500

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            if self.log_requests:
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    route,
                    status,
                    extra={
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            REQUEST_ID.reset(token)
