"""Stripe's webhook endpoint: checked by signature (no API key), stored and applied at once.

The signature is checked on the event loop (microseconds: an HMAC and an orjson parse), so a bad
delivery never waits behind good ones. Verified deliveries are applied by a writer thread, never
on the event loop (a transaction may wait for a lock, and every other route would wait with
it). The writer takes every delivery queued since its last commit and applies them in one
transaction, answering each after the shared commit (group commit; see
`apply_stripe_deliveries`, which falls back to one transaction per event when one of them
fails). Commits are what limit a database's write rate, PostgreSQL's above all (each waits for
the disk), so under load many events share one; alone, an event still commits at once. One
thread means a delivery whose customer is locked by another transaction (a job, another process)
holds up this process's later deliveries until that lock is released; Tollgate's transactions
are short. An event that needs an object from Stripe finishes on the general thread pool, so a
slow answer from Stripe holds up no other delivery.

`StripeWebhookFastPath` takes the same deliveries before FastAPI's stack: routing, parameter
solving and middleware cost more CPU than checking, storing and applying an event. It answers
exactly what the route answers (the same statuses and error bodies) and counts in /metrics
under the route's template; the route stays for every other way in (tests, OpenAPI).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from tollgate.api.deps import container
from tollgate.api.errors import error_response, status_of
from tollgate.api.middleware import body_too_large
from tollgate.bootstrap import Container
from tollgate.clock import Clock
from tollgate.config import ConfigError
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import TollgateError
from tollgate.metrics import HTTP_LATENCY, HTTP_REQUESTS
from tollgate.services.webhooks import (
    Delivery,
    ProcessResult,
    WebhookProcessingFailed,
    apply_stripe_deliveries,
    process_stripe_event,
    verify_stripe_delivery,
)
from tollgate.stripe.gateway import StripeGateway

log = logging.getLogger("tollgate.webhooks")
router = APIRouter(tags=["webhooks"])


ROUTE = "/webhooks/stripe"


@router.post(ROUTE)
async def post_stripe_webhook(request: Request) -> Response:
    """Take one Stripe event: 200 once applied (or already applied), 500 so Stripe retries."""
    # The signature covers the exact bytes Stripe sent, so read them before anything parses.
    body = await request.body()
    # The container is read here, not through a dependency: FastAPI runs a sync dependency on
    # the thread pool, a round trip that costs more than checking the signature.
    answer = await take_stripe_delivery(
        container(request), body, request.headers.get("stripe-signature")
    )
    return Response(answer, media_type="application/json")


async def take_stripe_delivery(app: Container, body: bytes, signature: str | None) -> bytes:
    """Verify, store and apply one delivery; return the JSON answer, or raise TollgateError."""
    delivery = verify_stripe_delivery(
        raw_body=body, signature_header=signature, settings=app.settings, clock=app.clock
    )
    result = await _writer.apply(app.db, app.clock, delivery)
    if result.pending:
        result = await run_in_threadpool(_process, app, result.event_id)
    if result.failed:
        raise WebhookProcessingFailed(
            f"event {result.event_id} is stored but could not be applied; "
            "it will be retried (see `tollgate events list --status failed`)"
        )
    if result.customers and "entitlements" in app.__dict__:
        # This process's cached decisions go at once; other processes see the change feed.
        app.entitlements.forget(result.customers)
    return orjson.dumps({"received": True, "id": result.event_id, "status": result.outcome})


class StripeWebhookFastPath:
    """Answer `POST /webhooks/stripe` before FastAPI's stack; hand every other request on."""

    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container
        self.limit = container.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != ROUTE:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            answer = await self._answer(scope, receive)
        except ClientDisconnect:  # nobody to answer; nothing was stored
            return
        await answer(scope, receive, send)
        HTTP_REQUESTS.labels("POST", ROUTE, str(answer.status_code)).inc()
        HTTP_LATENCY.labels(ROUTE).observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        signature: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return body_too_large(self.limit)
            if name == b"stripe-signature":
                signature = value.decode("latin-1")
        body = await _read_body(receive, self.limit)
        if body is None:
            return body_too_large(self.limit)
        try:
            answer = await take_stripe_delivery(self.container, body, signature)
        except TollgateError as error:
            return error_response(status_of(error), error.type, error.message, error.param)
        except ConfigError as error:
            return error_response(503, "configuration_error", str(error))
        except Exception:  # as FastAPI would: a 500, with the traceback in the log
            log.exception("POST %s failed", ROUTE)
            return error_response(500, "api_error", "internal error")
        return Response(answer, media_type="application/json")


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Return the request's body, or None once it grows past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _process(app: Container, event_id: str) -> ProcessResult:
    return process_stripe_event(
        db=app.db, gateway=_gateway(app), event_id=event_id, clock=app.clock
    )


def _gateway(app: Container) -> StripeGateway | None:
    # Most events need no call to Stripe, so a missing key fails only the events that do.
    try:
        return app.stripe
    except ConfigError:
        return None


@dataclass(frozen=True)
class _Job:
    db: Database
    clock: Clock
    delivery: Delivery
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ProcessResult]


class _GroupWriter:
    """A thread applying queued deliveries, as many to a transaction as are waiting.

    The thread keeps one pinned connection per database while it has work, starts when a
    delivery arrives and ends after a while without any, so an idle process (or a test's app)
    keeps none.
    """

    IDLE_SECONDS = 10.0

    def __init__(self, *, group: int) -> None:
        self._group = group
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    async def apply(self, db: Database, clock: Clock, delivery: Delivery) -> ProcessResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProcessResult] = loop.create_future()
        self._jobs.put(_Job(db, clock, delivery, loop, future))
        with self._lock:
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name="tollgate-webhooks", daemon=True).start()
        return await future

    def _serve(self) -> None:
        while (first := self._wait()) is not None:
            with ExitStack() as pins:
                pinned: set[int] = set()
                jobs = [first]
                while jobs:
                    for job in jobs:
                        if id(job.db) not in pinned:
                            pinned.add(id(job.db))
                            try:
                                pins.enter_context(job.db.pinned())
                            except Exception:  # the jobs run unpinned and meet the error there
                                log.exception("could not pin a database connection")
                    _apply_group(jobs)
                    jobs = self._take(self._group)

    def _take(self, limit: int) -> list[_Job]:
        jobs: list[_Job] = []
        while len(jobs) < limit:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _wait(self) -> _Job | None:
        """Return the next job; None when none came for IDLE_SECONDS (the thread then ends)."""
        while True:
            try:
                return self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # A job put after the timeout is seen here, under the lock `apply` takes.
                    if self._jobs.empty():
                        self._running = False
                        return None


def _apply_group(jobs: list[_Job]) -> None:
    """Apply the jobs, a transaction per database, and hand each request its answer."""
    by_db: dict[int, list[_Job]] = {}
    for job in jobs:
        by_db.setdefault(id(job.db), []).append(job)
    answers: dict[asyncio.AbstractEventLoop, list[tuple[_Job, ProcessResult | BaseException]]] = {}
    for group in by_db.values():
        outcomes: list[ProcessResult | BaseException]
        try:
            outcomes = list(
                apply_stripe_deliveries(
                    db=group[0].db,
                    deliveries=[job.delivery for job in group],
                    clock=group[0].clock,
                )
            )
        except Exception as error:  # handed to the requests, which answer for it
            outcomes = [error] * len(group)
        for job, outcome in zip(group, outcomes, strict=True):
            answers.setdefault(job.loop, []).append((job, outcome))
    for loop, settled in answers.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop closed: nobody is waiting for these any more
            log.debug("event loop closed before %d webhook answers", len(settled))


def _settle(outcomes: list[tuple[_Job, ProcessResult | BaseException]]) -> None:
    for job, outcome in outcomes:
        if job.future.done():  # the request was cancelled (the client went away)
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


# Measured with bench/webhooks.py: one thread applies every delivery, on SQLite (one writer at a
# time anyway) and on PostgreSQL, where an event's statements go in one or two round trips (see
# services/webhook_handlers._run) and more threads only fought over the interpreter's lock: four
# threads, each owning a share of the customers, did 20-25 % fewer events/s than one. At most 64
# deliveries share a transaction: enough to amortise a commit, few enough that the first of a
# group does not wait long for the last.
_writer = _GroupWriter(group=64)
