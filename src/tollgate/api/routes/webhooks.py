"""Stripe's webhook endpoint: checked by signature (no API key), stored and applied at once.

Deliveries are applied on threads of their own, never on the event loop (a transaction may wait
for a lock, and every other route would wait with it) and not on the general thread pool: on
SQLite one thread applies every delivery, one after the other, as SQLite has one writer at a time
anyway; threads queueing on the write lock, and a hop to the pool per delivery, cost more CPU than
the transaction itself. On PostgreSQL a few threads apply deliveries side by side, so their round
trips and commits overlap. An event that needs an object from Stripe finishes on the general
thread pool, so a slow answer from Stripe holds up no other delivery.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tollgate.api.deps import container
from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.db.unit_of_work import Database
from tollgate.services.webhooks import (
    ProcessResult,
    WebhookProcessingFailed,
    apply_stripe_delivery,
    process_stripe_event,
)
from tollgate.stripe.gateway import StripeGateway

log = logging.getLogger("tollgate.webhooks")
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/stripe")
async def post_stripe_webhook(request: Request) -> Response:
    """Take one Stripe event: 200 once applied (or already applied), 500 so Stripe retries."""
    # The signature covers the exact bytes Stripe sent, so read them before anything parses.
    body = await request.body()
    signature = request.headers.get("stripe-signature")
    # The container is read here, not through a dependency: FastAPI runs a sync dependency on
    # the thread pool, a round trip that costs more than checking the signature.
    app = container(request)
    result = await _appliers[app.db.dialect == "sqlite"].run(
        app.db,
        lambda: apply_stripe_delivery(
            db=app.db,
            raw_body=body,
            signature_header=signature,
            settings=app.settings,
            clock=app.clock,
        ),
    )
    if result.pending:
        result = await run_in_threadpool(_process, app, result.event_id)
    if result.failed:
        raise WebhookProcessingFailed(
            f"event {result.event_id} is stored but could not be applied; "
            "it will be retried (see `tollgate events list --status failed`)"
        )
    answer = {"received": True, "id": result.event_id, "status": result.outcome}
    return Response(orjson.dumps(answer), media_type="application/json")


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
    work: Callable[[], ProcessResult]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ProcessResult]


_Outcome = tuple[_Job, Any, BaseException | None]


class _Appliers:
    """Threads that run deliveries: up to `threads` at once, answering `batch` at a time.

    A thread keeps taking jobs while any are queued, on one pinned connection per database,
    and hands back answers a batch at a time: one wake-up of the event loop for many
    deliveries. Threads start when jobs arrive and end after a while without any, so an idle
    process (or a test's app) keeps none.
    """

    IDLE_SECONDS = 10.0

    def __init__(self, *, threads: int, batch: int) -> None:
        self._threads = threads
        self._batch = batch
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0

    async def run(self, db: Database, work: Callable[[], ProcessResult]) -> ProcessResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProcessResult] = loop.create_future()
        self._jobs.put(_Job(db, work, loop, future))
        with self._lock:
            if self._waiting == 0 and self._running < self._threads:
                self._running += 1
                threading.Thread(target=self._serve, name="tollgate-webhooks", daemon=True).start()
        return await future

    def _serve(self) -> None:
        while (job := self._next(block=True)) is not None:
            with ExitStack() as pins:
                pinned: set[int] = set()
                outcomes: list[_Outcome] = []
                while job is not None:
                    if id(job.db) not in pinned:
                        pinned.add(id(job.db))
                        try:
                            pins.enter_context(job.db.pinned())
                        except Exception:  # the job runs unpinned, and meets the error itself
                            log.exception("could not pin a database connection")
                    outcomes.append(_run(job))
                    if len(outcomes) >= self._batch:
                        _answer(outcomes)
                        outcomes = []
                    job = self._next(block=False)
                _answer(outcomes)

    def _next(self, *, block: bool) -> _Job | None:
        """Return the next job; None when none is queued, or (blocking) when this thread ends."""
        if not block:
            try:
                return self._jobs.get_nowait()
            except queue.Empty:
                return None
        while True:
            with self._lock:
                self._waiting += 1
            try:
                job = self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    # A job put after the timeout is seen here, under the lock `run` takes.
                    if self._jobs.empty():
                        self._running -= 1
                        return None
                continue
            with self._lock:
                self._waiting -= 1
            return job


def _run(job: _Job) -> _Outcome:
    try:
        return (job, job.work(), None)
    except Exception as error:  # handed to the request, which answers for it
        return (job, None, error)


def _answer(outcomes: list[_Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, answers)
        except RuntimeError:  # the loop closed: nobody is waiting for these any more
            log.debug("event loop closed before %d webhook answers", len(answers))


def _settle(outcomes: list[_Outcome]) -> None:
    for job, result, error in outcomes:
        if job.future.done():  # the request was cancelled (the client went away)
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


# Measured with bench/webhooks.py. SQLite: one writer, answering four deliveries per wake-up of
# the event loop (one per delivery costs a fifth more CPU; 64 kept the first of a batch waiting,
# p99 90 ms instead of 30). PostgreSQL: four threads, so round trips and commits overlap; more
# only contend for the GIL, and more than the pool keeps (10) would open and close a connection
# per transaction.
_appliers = {True: _Appliers(threads=1, batch=4), False: _Appliers(threads=4, batch=1)}
