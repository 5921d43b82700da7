"""ASGI middleware: refuse oversized bodies, time every request for /metrics, give it an id."""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.errors import BodyTooLarge, error_response
from tollgate.api.guard import JSON_TYPE, safe_json_headers
from tollgate.logs import REQUEST_ID
from tollgate.metrics import HTTP_LATENCY, HTTP_REQUESTS

access_log = logging.getLogger("tollgate.access")


def body_too_large(limit: int) -> JSONResponse:
    """The 413 answer to a body over `limit` bytes, declared or streamed."""
    message = f"the request body is larger than {limit} bytes"
    return error_response(413, "request_too_large", message)


def json_answer(body: bytes, *headers: tuple[bytes, bytes]) -> tuple[Message, Message]:
    """The two ASGI messages that answer 200 with a JSON body already encoded, as the fast
    paths send them before FastAPI's stack: no Response object, and no coroutine of its own
    (the caller awaits its `send` of each)."""
    request_id = REQUEST_ID.get()
    start: list[tuple[bytes, bytes]]
    if request_id is not None and not headers:
        # Inside the Guard (it set the id): its headers go in now, in one list it passes as is.
        start = safe_json_headers(len(body), request_id)
    else:
        start = [JSON_TYPE, (b"content-length", b"%d" % len(body)), *headers]
    return (
        {"type": "http.response.start", "status": 200, "headers": start},
        {"type": "http.response.body", "body": body},
    )


def whole_body(message: Message, limit: int) -> bytes | None:
    """The body when the request's first `message` carries all of it within `limit` bytes (the
    usual request), taken as it is without a coroutine; None when `read_body` must go on."""
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")
        if len(body) <= limit:
            return body
    return None


async def read_body(receive: Receive, limit: int, first: Message | None = None) -> bytes | None:
    """Return the request's body, or None once it grows past `limit` bytes. `first`: its first
    message, when already received."""
    chunks: list[bytes] = []
    size = 0
    message = first if first is not None else await receive()
    while True:
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        if not message.get("more_body", False):
            # The usual body, in one message, is taken as it is.
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)
        message = await receive()


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


class _RequestObserver:
    """Run the app on each HTTP request, then `observe` it: the status answered (500 when the
    app failed before answering) and the seconds it took."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        except ClientDisconnect:
            # Nobody was answered, and nothing failed: 499 (as nginx counts it), in the metrics
            # and the access log alike, never a 500 that an error-rate alert would take for the
            # server's fault.
            status = 499
            raise
        finally:
            self.observe(scope, status, time.perf_counter() - started)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        raise NotImplementedError


class Metrics(_RequestObserver):
    """Count and time requests by route template (not raw path, to bound label cardinality)."""

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
        HTTP_LATENCY.labels(template).observe(seconds)


class AccessLog(_RequestObserver):
    """Log one line per request (method, route, status, duration); the request id, set by the
    Guard outside, rides along from the log context."""

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
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
                "duration_ms": round(seconds * 1000, 2),
            },
        )
