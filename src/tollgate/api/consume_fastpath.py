"""`POST /v1/customers/{id}/consume`'s short way: answered before FastAPI's stack when it can be.

An app consumes on every unit of work it does, so the call must cost little beyond its share of
a transaction. The work itself is the consume writer's (services/usage/consume.py: calls waiting
at the same moment are decided in order and committed together); FastAPI's routing, parameter
solving and body model around it cost more CPU than a call's share of the group. This ASGI
layer answers the plain valid case directly: a write key, a JSON body of exactly `feature`,
`quantity` (a whole number, 0 or more) and `id` (1 to 255 characters), text a database can
store (`schemas.plain_consume`, the in-process client's check too), and a call the service
answers. Anything else (a bad key, a bad body, an unknown customer or feature, an id used
otherwise: any error) goes on to the FastAPI route with the body as read, which answers it as
it answers every route, so there is one definition of each error and the contract is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.fastpath import key_allows
from tollgate.api.middleware import body_too_large, json_answer, read_body, whole_body
from tollgate.api.schemas import plain_consume
from tollgate.bootstrap import Container
from tollgate.domain.errors import TollgateError
from tollgate.metrics import RouteAnswers
from tollgate.services.usage import ConsumeCall

ROUTE = "/v1/customers/{customer_id}/consume"
_REPLAYED = (b"idempotent-replayed", b"true")


class ConsumeFastPath:
    """Answer plain valid consume calls through the consume writer; hand the rest to `app`."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container
        self.limit = container.settings.max_body_bytes
        # Metric children resolved once: a labelled lookup per request costs a few µs.
        self._answered = RouteAnswers("POST", ROUTE, 200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.awaitable_for(scope, receive, send)

    def awaitable_for(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What answers the request: the inner app's own awaitable when this layer lets the
        request by. Plain, not async: TollgateApi chains its layers by this (api/app.py), one
        coroutine less per layer and request."""
        customer_id = _customer_of(scope)
        if customer_id is None or not key_allows(self.container, scope, "write"):
            return self.app(scope, receive, send)
        return self._consume(customer_id, scope, receive, send)

    async def _consume(self, customer_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        first = await receive()
        body = whole_body(first, self.limit)
        if body is None:
            body = await read_body(receive, self.limit, first)
            if body is None:
                await body_too_large(self.limit)(scope, receive, send)
                return
        call = _plain_call(customer_id, body)
        if call is not None:
            try:
                consumed = await self.container.consume_writer.consume(call)
            except TollgateError:
                pass  # the route answers it (deciding again is idempotent), with its error
            else:
                answer = orjson.dumps(consumed.to_json())
                start, whole = json_answer(answer, *((_REPLAYED,) if consumed.replayed else ()))
                await send(start)
                await send(whole)
                self._answered.observe(time.perf_counter() - started)
                return
        await self.app(scope, _replay(body, receive), send)


def _customer_of(scope: Scope) -> str | None:
    """The customer id of a `POST /v1/customers/{id}/consume`, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")
    # ["", "v1", "customers", id, "consume"]
    if len(parts) != 5 or parts[4] != "consume" or parts[2] != "customers" or parts[1] != "v1":
        return None
    return parts[3] or None


def _plain_call(customer_id: str, body: bytes) -> ConsumeCall | None:
    """The call a plain valid body asks for; None for anything the route should judge."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    plain = plain_consume(data)
    if plain is None:
        return None
    # Made in C (the named tuple's own constructor is a Python function).
    return tuple.__new__(ConsumeCall, (customer_id, *plain))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then what the client sends next."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again
