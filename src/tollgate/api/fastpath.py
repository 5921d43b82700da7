"""The entitlement check's short way through: answered before FastAPI's stack when it can be.

An app asks "may this customer do X?" on every request it serves, so the check must cost next to
nothing. The decision itself is a dictionary lookup in the process's cache (under a
microsecond); FastAPI's middleware, routing and parameter solving around it cost about three
times what uvicorn does alone. This ASGI layer answers the two entitlement reads directly when
the request is the plain, valid case: `GET /v1/customers/{id}/entitlements[/{feature}]` with a
read key and well-formed `quantity` / `in_use`. Anything else (a bad key, a bad number, an
unknown customer or feature, any error) goes on to the FastAPI app, which answers it as it
answers every route, so there is one definition of each error and the API contract is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send

from tollgate.api.deps import authorize
from tollgate.api.middleware import json_answer
from tollgate.bootstrap import Container
from tollgate.domain.errors import TollgateError
from tollgate.metrics import RouteAnswers

ENTITLEMENTS_ROUTE = "/v1/customers/{customer_id}/entitlements"
CHECK_ROUTE = "/v1/customers/{customer_id}/entitlements/{feature}"
_REMEMBERED_QUERIES = 1_000


class EntitlementFastPath:
    """Answer valid entitlement reads from the cache; hand every other request to `app`."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container
        # Query strings read before (an app sends a few, `quantity=1` mostly): parsed once.
        self._queries: dict[bytes, tuple[int, int | None]] = {}
        # Metric children resolved once: a labelled lookup per request costs a few µs.
        self._counted = {
            route: RouteAnswers("GET", route, 200) for route in (ENTITLEMENTS_ROUTE, CHECK_ROUTE)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.awaitable_for(scope, receive, send)

    def awaitable_for(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What answers the request: the inner app's own awaitable when this layer lets the
        request by. Plain, not async: TollgateApi chains its layers by this (api/app.py), one
        coroutine less per layer and request."""
        if scope["type"] == "http" and scope["method"] == "GET":
            started = time.perf_counter()
            answer = self._answer(scope)
            if answer is not None:
                return self._send(send, answer, started)
        return self.app(scope, receive, send)

    async def _send(self, send: Send, answer: tuple[str, bytes], started: float) -> None:
        route, body = answer
        start, whole = json_answer(body)
        await send(start)
        await send(whole)
        self._counted[route].observe(time.perf_counter() - started)

    def _answer(self, scope: Scope) -> tuple[str, bytes] | None:
        """The route and JSON body for a plain valid read, or None to let the app answer."""
        parts = scope["path"].split("/")
        # ["", "v1", "customers", id, "entitlements"(, feature)]
        if not (5 <= len(parts) <= 6 and parts[1] == "v1" and parts[2] == "customers"):
            return None
        if parts[4] != "entitlements" or not parts[3] or (len(parts) == 6 and not parts[5]):
            return None
        if not self._may_read(scope):
            return None
        cache = self.container.entitlements
        try:
            if len(parts) == 5:
                if scope["query_string"]:
                    return None
                return ENTITLEMENTS_ROUTE, cache.entitlements_json(parts[3])
            query = scope["query_string"]
            numbers = self._queries.get(query)
            if numbers is None:
                numbers = _check_query(query)
                if numbers is None:
                    return None
                if len(self._queries) >= _REMEMBERED_QUERIES:
                    self._queries = {}
                self._queries[query] = numbers
            quantity, in_use = numbers
            answer = cache.check_json(parts[3], parts[5], quantity, in_use=in_use)
        except TollgateError:
            return None  # the app answers it, with the error it names
        return CHECK_ROUTE, answer

    def _may_read(self, scope: Scope) -> bool:
        return key_allows(self.container, scope, "read")


def key_allows(container: Container, scope: Scope, needed: str) -> bool:
    """Return whether the request's API key has scope `needed` (False: let the app answer)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            try:
                authorize(container.authenticator, value.decode("latin-1"), needed)
            except TollgateError:
                return False  # the app answers it, as the route's dependency does
            return True
    return False


def _check_query(query: bytes) -> tuple[int, int | None] | None:
    """`quantity` (default 1) and `in_use` as non-negative integers; None for anything else."""
    quantity, in_use = 1, None
    if not query:
        return quantity, in_use
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if not value.isdigit() or len(value) > 18:
            return None
        if name == b"quantity":
            quantity = int(value)
        elif name == b"in_use":
            in_use = int(value)
        else:
            return None
    return quantity, in_use
