"""The outermost layer of every request: its id, safe headers, and no answer outside the shape.

Every request gets an id (the caller's `X-Request-Id` when it looks like one, else `req_…`),
echoed on the answer and carried by every log line of the request (tollgate.logs). A path or query
string carrying text no database can store (NUL) is refused here, before any route, fast path or
cache reads it. Any exception that nothing else answered becomes a 500 in the error shape
(`{"error": {"type": "api_error", "message", "request_id"}}`), logged once with the request id
and the route's method and path (never its body or headers, which may hold secrets). A client
that went away before its answer is not an error: nothing is sent and it is logged at INFO.

Every answer says `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`; JSON
and metrics answers also `Cache-Control: no-store` (they may carry an API key's secret or a
customer's state) and a Content-Security-Policy that allows nothing (a JSON answer opened in a
browser runs no script). Pages set their own Cache-Control and CSP; this layer leaves them be.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.errors import error_response
from tollgate.logs import REQUEST_ID, new_request_id, request_id_from
from tollgate.tracing import note_request_id

log = logging.getLogger("tollgate.api")

_STRICT_TYPES = (b"application/json", b"text/plain")
_JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


class Guard:
    """Give each request an id and safe headers; answer every unexpected failure in the shape.

    `traced`: put the request id on the request's span (FastAPI's), decided when the app is made
    as FastAPI decides its request spans (tracing.fastapi_telemetry); asking per request costs a
    look at the environment.
    """

    def __init__(self, app: ASGIApp, *, traced: bool = False) -> None:
        self.app = app
        self.traced = traced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        request_id = new_request_id() if given is None else request_id_from(given)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        if self.traced:
            note_request_id(request_id)
        started = False

        # Plain, not async: it hands back `send`'s own awaitable, one coroutine less per message.
        def guarded_send(message: Message) -> Awaitable[None]:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if type(message.get("headers")) is not SafeHeaders:
                    _secure(message, request_id)
            return send(message)

        try:
            # The plain path and query (no NUL, no "%00") are seen here, without a call.
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope["path"] or (query.find(b"%00") >= 0 and _unstorable(scope)):
                answer = error_response(
                    400,
                    "invalid_request_error",
                    "the path or query string contains a NUL character (%00), which no id can hold",
                )
                await answer(scope, receive, guarded_send)
                return
            await self.app(scope, receive, guarded_send)
        except ClientDisconnect:
            log.info(
                "client went away before its answer: %s %s (%s)",
                scope["method"],
                scope["path"],
                request_id,
            )
        except Exception:
            log.exception(
                "unexpected error answering %s %s (%s)", scope["method"], scope["path"], request_id
            )
            if not started:
                answer = error_response(
                    500,
                    "api_error",
                    f"internal error; the operator can find it in the log by {request_id}",
                    request_id=request_id,
                )
                await answer(scope, receive, guarded_send)
        finally:
            REQUEST_ID.reset(token)


def _unstorable(scope: Scope) -> bool:
    if "\x00" in scope["path"]:
        return True
    query: bytes = scope.get("query_string", b"")
    # `find`, not `in`: `bytes in bytes` first tries the needle as an int (a TypeError raised and
    # cleared), twice the cost on every request.
    return query.find(b"%00") >= 0 and b"\x00" in unquote_to_bytes(query)


JSON_TYPE = (b"content-type", b"application/json")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_REFERRER = (b"referrer-policy", b"no-referrer")
_NO_STORE = (b"cache-control", b"no-store")
_DENY_ALL = (b"content-security-policy", _JSON_CSP.encode())


class SafeHeaders(list[tuple[bytes, bytes]]):
    """An answer's headers with the Guard's already in (`safe_json_headers`): sent as they are."""


def safe_json_headers(length: int, request_id: str) -> SafeHeaders:
    """The headers of a JSON answer of `length` bytes, with the request's id and the safe headers
    as `_secure` adds them: a layer inside the Guard that answers before the app builds them in
    one go, and the Guard does not look through them again."""
    return SafeHeaders(
        (
            JSON_TYPE,
            (b"content-length", b"%d" % length),
            (b"x-request-id", request_id.encode()),
            _NOSNIFF,
            _NO_REFERRER,
            _NO_STORE,
            _DENY_ALL,
        )
    )


def _secure(message: Message, request_id: str) -> None:
    """Add the safe headers the answer does not set itself (one pass; names are lowercase in
    ASGI messages Starlette and Tollgate's own layers send)."""
    headers = list(message.get("headers") or ())
    strict = cached = policed = sniffed = referred = identified = False
    for name, value in headers:
        if name == b"content-type":
            strict = value.startswith(_STRICT_TYPES)
        elif name == b"cache-control":
            cached = True
        elif name == b"content-security-policy":
            policed = True
        elif name == b"x-content-type-options":
            sniffed = True
        elif name == b"referrer-policy":
            referred = True
        elif name == b"x-request-id":
            # Only safe_json_headers set it: a layer that copied SafeHeaders into a plain list.
            identified = True
    if not identified:
        headers.append((b"x-request-id", request_id.encode()))
    if not sniffed:
        headers.append(_NOSNIFF)
    if not referred:
        headers.append(_NO_REFERRER)
    if strict:
        if not cached:
            headers.append(_NO_STORE)
        if not policed:
            headers.append(_DENY_ALL)
    message["headers"] = headers
