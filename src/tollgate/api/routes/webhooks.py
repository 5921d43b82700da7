"""Stripe's webhook endpoint: checked by signature (no API key), stored and applied at once.

The work is the webhook intake's (tollgate.services.webhooks.intake): this route and its
short way only read the body and answer. `StripeWebhookFastPath` takes the same deliveries
before FastAPI's stack: routing, parameter solving and middleware cost more CPU than checking,
storing and applying an event. It answers exactly what the route answers (the same statuses and
error bodies) and counts in /metrics under the route's template; the route stays for every other
way in (tests, OpenAPI).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tollgate.api.deps import container
from tollgate.api.errors import error_response, status_of
from tollgate.api.middleware import body_too_large, json_answer, read_body, whole_body
from tollgate.api.openapi import error_answer
from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.domain.errors import TollgateError
from tollgate.metrics import RouteAnswers
from tollgate.services.webhooks import ProcessResult

router = APIRouter(tags=["webhooks"])


ROUTE = "/webhooks/stripe"


@router.post(
    ROUTE,
    responses={
        413: error_answer(413),
        500: error_answer(500),
        503: error_answer(503, "STRIPE_WEBHOOK_SECRETS is not set."),
    },
)
async def post_stripe_webhook(request: Request) -> Response:
    """Take one Stripe event: 200 once applied (or already applied), 500 so Stripe retries."""
    # The signature covers the exact bytes Stripe sent, so read them before anything parses.
    body = await request.body()
    # The container is read here, not through a dependency: FastAPI runs a sync dependency on
    # the thread pool, a round trip that costs more than checking the signature.
    intake = container(request).webhook_intake
    result = await intake.take(body, request.headers.get("stripe-signature"))
    return Response(_received(result), media_type="application/json")


def _received(result: ProcessResult) -> bytes:
    """The body of a delivery's 200."""
    return orjson.dumps({"received": True, "id": result.event_id, "status": result.outcome})


class StripeWebhookFastPath:
    """Answer `POST /webhooks/stripe` before FastAPI's stack; hand every other request on."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container
        self.limit = container.settings.max_body_bytes
        self._answered: dict[int, RouteAnswers] = {}  # by status, made as first answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.awaitable_for(scope, receive, send)

    def awaitable_for(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What answers the request: the inner app's own awaitable when this layer lets the
        request by. Plain, not async: TollgateApi chains its layers by this (api/app.py), one
        coroutine less per layer and request."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != ROUTE:
            return self.app(scope, receive, send)
        return self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        try:
            answer = await self._answer(scope, receive)
            if isinstance(answer, bytes):
                status = 200
                start, whole = json_answer(answer)
                await send(start)
                await send(whole)
            else:
                status = answer.status_code
                await answer(scope, receive, send)
        except ClientDisconnect:  # nobody to answer; nothing was stored
            status = 499
            raise  # the access log outside notes the 499 too; the Guard logs it as no error
        finally:
            # An unexpected error goes on to the API's outermost layer (api/guard.py), which
            # logs it once and answers it in the error shape with its request id.
            answered = self._answered.get(status)
            if answered is None:  # a label lookup takes a lock: each status's is kept
                answered = self._answered[status] = RouteAnswers("POST", ROUTE, status)
            answered.observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> bytes | Response:
        """The body of a 200, or the error's answer."""
        signature: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return body_too_large(self.limit)
            if name == b"stripe-signature":
                signature = value.decode("latin-1")
        first = await receive()
        body = whole_body(first, self.limit)
        if body is None:
            body = await read_body(receive, self.limit, first)
            if body is None:
                return body_too_large(self.limit)
        try:
            result = await self.container.webhook_intake.take(body, signature)
        except TollgateError as error:
            return error_response(status_of(error), error.type, error.message, error.param)
        except ConfigError as error:
            return error_response(503, "configuration_error", str(error))
        return _received(result)
