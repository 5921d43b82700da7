"""Group commit: one writer thread applying queued work, as many items to a transaction as wait.

Commits are what limit a database's write rate, PostgreSQL's above all (each waits for the
disk), and on SQLite writers take turns anyway; so concurrent requests that write hand their
item to one thread, which takes every item queued since its last commit and applies them
together (`apply`: one transaction), answering each after the shared commit. Under load many
items share a commit; alone, an item still commits at once. Stripe's deliveries
(services/webhooks/intake.py) and consume calls (services/usage/consume.py) go this way.

The thread keeps one pinned connection while it has work (taken anew after a pause of a second),
starts when an item arrives and ends after `idle_seconds` without any, so an idle process keeps
no thread and no pinned connection.
Callers on threads of their own (an in-process client) need no writer thread: one of them
applies the group while the others wait (`apply_blocking`), on a connection the writer keeps for
them from turn to turn (taken anew after a pause of a second, and returned by `stop`): a lone
caller so pays no checkout a call (on PostgreSQL the pool's pre-ping and its rollback on
return, two round trips).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import Connection

from tollgate.db.unit_of_work import Database
from tollgate.metrics import GROUP_COMMIT_ITEMS, GROUP_COMMITS

log = logging.getLogger("tollgate.group_commit")

# A writer thread idle longer than this takes its connection from the pool again (pre-pinged).
_REPIN_AFTER = 1.0
# A writer waiting for answered callers stops once none came for this long (not load).
_BUSY = 0.01
# Waits bounded by an eighth of the linger after callers did not come back.
_DOUBTED = 16

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Job(NamedTuple, Generic[Item]):
    """One queued item (a named tuple: one is made per request, by `_new_job`)."""

    item: Item
    # An asyncio request waits on `future` in `loop`; a thread (apply_blocking) on a _Waiter.
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | _Waiter


# A _Job made in C: a named tuple's own constructor is a Python function (a frame per item).
_new_job = tuple.__new__


class GroupWriter(Generic[Item, Outcome]):
    """A thread applying queued items with `apply`, as many to a transaction as are waiting
    (at most `group`). `apply` returns one outcome per item, an exception being that item's
    error; an exception `apply` raises is every item's. With `linger`, after a group that
    shared a commit the thread waits for as many items as it answered to come back (with
    those already queued) before taking the next group: at most `linger` seconds (an eighth
    of it for a while after callers did not come back within it), and no longer once none
    came for `busy_window` seconds (not load); a lone item never waits."""

    def __init__(
        self,
        db: Database,
        apply: Callable[[list[Item]], Sequence[Outcome | BaseException]],
        *,
        name: str,
        group: int = 64,
        idle_seconds: float = 10.0,
        linger: float = 0.0,
        busy_window: float = _BUSY,
    ) -> None:
        self.db = db
        self.linger = linger
        self.busy_window = busy_window
        self._apply_items = apply
        self.name = name
        self.group = group
        self.idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[_Job[Item] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # While the thread waits for answered callers to come back: how many items it waits
        # for (0: not waiting), and the event `apply` sets once they are queued.
        self._awaited = 0
        self._returned = threading.Event()
        # Waits left bounded by an eighth of `linger`: callers did not come back lately.
        self._doubted = 0
        self._ending = False  # stop() asked the thread to end
        self._running = False
        self._thread: threading.Thread | None = None
        # Blocking callers' items (each caller asleep on its own `_Waiter`), whether one of
        # them is applying them (leading), and the lock that guards both.
        self._waiting: list[_Job[Item]] = []
        self._leading = False
        self._turn = threading.Lock()
        # The leader's connection (only the leader uses it), and when its last turn ended.
        self._held: Connection | None = None
        self._held_until = 0.0
        self._stopped = False  # stopped: blocking callers' transactions check out as they come
        # Groups applied and the items in them: how well concurrent items share commits (also
        # in the metrics, by the writer's name).
        self.applied = (0, 0)
        self._commits = GROUP_COMMITS.labels(name)
        self._items = GROUP_COMMIT_ITEMS.labels(name)

    def apply(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue the item; await the returned future for its outcome once its group has
        committed.

        Plain, not async: the caller awaits the future itself, one coroutine less per item.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        jobs = self._jobs
        jobs.put(_new_job(_Job, (item, loop, future)))
        if self._awaited and jobs.qsize() >= self._awaited:
            self._awaited = 0
            self._returned.set()  # the group the thread waits for is queued
        # Read after the put, without the lock (a lock per item saved under load): a thread
        # seen running has not yet looked at the queue to end, and will find the job (_wait).
        if not self._running:
            self._start()
        return future

    def apply_blocking(self, item: Item) -> Outcome:
        """`apply` for a thread (an in-process client's), with no hand-over to another thread:
        a caller that finds nobody applying blocking items leads: it applies those waiting, in
        groups, until its own is answered, then hands the lead to the first caller still
        waiting. The others sleep meanwhile, each woken once: when its item is answered, or
        when the lead is handed to it. A lone caller so costs no more than applying its item
        alone."""
        turn = self._turn
        waiter: _Waiter | None = None
        with turn:
            if self._leading:
                waiter = _Waiter()
                self._waiting.append(_Job(item, None, waiter))
            else:
                self._leading = True
        if waiter is not None:
            waiter.sleep()
            if waiter.done():  # a leader applied it
                return waiter.result()
            # The lead was handed to it: its item is first in line.
        try:
            with self._leader_pin():
                if waiter is None:
                    # Nobody else waiting: its item alone, with no waiter to settle and read
                    # (callers that come meanwhile wait; the first of them leads next).
                    (outcome,) = self._outcomes([item])
                else:
                    while not waiter.done():
                        with turn:
                            jobs = self._waiting[: self.group]
                            del self._waiting[: self.group]
                        self._apply(jobs)
        finally:
            with turn:
                if waiter is not None and not waiter.done():  # it leaves on an error raised
                    # above, its item unapplied: out of the line, or it would lead itself next
                    self._waiting = [job for job in self._waiting if job.future is not waiter]
                successor = self._waiting[0].future if self._waiting else None
                assert successor is None or isinstance(successor, _Waiter)
                self._leading = successor is not None
            if successor is not None:
                successor.lead()
        if waiter is not None:
            return waiter.result()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _leader_pin(self) -> AbstractContextManager[None]:
        """Pin the leader's transactions to the connection kept for blocking callers: the one
        of the last turn, unless it ended over `_REPIN_AFTER` ago (then taken anew from the
        pool, pre-pinged, so one that died meanwhile is not handed the group)."""
        if self._stopped:
            return nullcontext()
        held = self._held
        if held is not None and time.monotonic() > self._held_until:
            self._held = None
            held.close()
            held = None
        if held is None:
            try:
                held = self._held = self.db.engine.connect()
            except Exception:  # the items run unpinned and meet the error there
                log.exception("could not pin a database connection")
                return nullcontext()
        return self._pinned_turn(held)

    @contextmanager
    def _pinned_turn(self, held: Connection) -> Iterator[None]:
        try:
            with self.db.pinned_to(held):
                yield
        finally:
            self._held_until = time.monotonic() + _REPIN_AFTER
            if self._stopped:  # stopped during this turn: nobody returns it later
                self._held = None
                held.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread once the items it has are answered, and wait (at most `timeout`
        seconds) for it to end, so its connection is back in the pool before the pool closes."""
        with self._lock:
            thread = self._thread if self._running else None
            if thread is not None:
                self._ending = True  # no waiting for callers to come back, now or later
                self._jobs.put(None)
                self._returned.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._turn:
            self._stopped = True
            held, self._held = (self._held, None) if not self._leading else (None, self._held)
        if held is not None:
            held.close()

    def _start(self) -> None:
        """Start the thread unless it is running (checked again under the lock)."""
        with self._lock:
            if not self._running:
                self._running = True
                self._ending = False
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        with ExitStack() as pins:
            pinned, done_at = False, 0.0
            while (first := self._wait()) is not None:
                # The thread keeps its connection between groups (a lone caller at a time pays
                # no checkout), but takes it anew after a pause, with the pool's pre-ping, so a
                # connection that died while nothing came is not handed the next group.
                if pinned and time.monotonic() - done_at > _REPIN_AFTER:
                    pins.close()
                    pinned = False
                if not pinned:
                    try:
                        pins.enter_context(self.db.pinned())
                        pinned = True
                    except Exception:  # the items run unpinned and meet the error there
                        log.exception("could not pin a database connection")
                # What queued while this thread woke joins the first item: the calls of a
                # burst arrive together, and taking only the first would commit it alone and
                # leave the rest to the next group (groups alternating one and many).
                jobs: list[_Job[Item] | None] = [first, *self._take(self.group - 1)]
                while jobs:
                    queued = self._apply([job for job in jobs if job is not None])
                    if None in jobs:  # stopped: what came before is answered; end
                        with self._lock:
                            self._running = False
                        return
                    if self.linger and len(jobs) > 1:
                        self._await_returns(queued, len(jobs))
                    jobs = self._take()
                done_at = time.monotonic()

    def _await_returns(self, queued: int, answered: int) -> None:
        """Wait until the callers of the group just answered are back: `answered` more items
        than the `queued` ones there were as its answers went out, at most `linger` seconds,
        and no longer once none came for `busy_window` seconds.

        Under load the callers a group answers come back with their next item, and others
        queue meanwhile: taking what is queued at once commits those few alone and splits the
        callers into groups that alternate (a large one, then the few that came during its
        commit), each paying a transaction's fixed cost. Waiting for the answered to come back
        lets them share one commit; with one interpreter lock the event loop, which makes
        their items, runs meanwhile, so the wait costs the process nothing while it works. A
        fixed wait instead (the loop idle once it has queued them, or the wait over before it
        has) left a fifth of a core unused over HTTP (bench/consume.py).

        Items that come whatever the answers (many independent callers) would make every
        wait run to its bound: after a whole wait in which fewer than half came back, the
        next `_DOUBTED` waits are bounded by an eighth of `linger` (what they bring back does
        not count: under load the callers may need longer than that), then all of it again.
        """
        jobs = self._jobs
        awaited = min(queued + answered, self.group)
        doubted = self._doubted
        bound = self.linger / 8 if doubted else self.linger
        self._doubted = max(0, doubted - 1)
        self._returned.clear()
        self._awaited = awaited
        deadline = time.monotonic() + bound
        now = jobs.qsize()  # again: an item put before `_awaited` was set did not signal
        while now < awaited and not self._ending:
            left = deadline - time.monotonic()
            if left <= 0 or self._returned.wait(min(left, self.busy_window)):
                break
            seen, now = now, jobs.qsize()
            if now == seen:  # none came for busy_window: not load
                break
        self._awaited = 0
        if not doubted and (jobs.qsize() - queued) * 2 < answered:
            self._doubted = _DOUBTED

    def _take(self, most: int | None = None) -> list[_Job[Item] | None]:
        """Return the jobs queued now (at most `most`, else a group), without waiting."""
        jobs: list[_Job[Item] | None] = []
        while len(jobs) < (self.group if most is None else most):
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _wait(self) -> _Job[Item] | None:
        """Return the next job; None when stopped or when none came for `idle_seconds`."""
        while True:
            try:
                job = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    # Not running before the look at the queue: `apply` puts its job before
                    # it reads `_running` (without the lock), so a job put meanwhile is either
                    # seen here or finds the thread not running and starts one.
                    self._running = False
                    if self._jobs.empty():
                        return None
                    self._running = True
                continue
            if job is None:
                with self._lock:
                    self._running = False
                return None
            return job

    def _outcomes(self, items: list[Item]) -> Sequence[Outcome | BaseException]:
        """Apply the items together (counted in `applied` and the metrics): an outcome each,
        an exception `apply` raised being every item's."""
        groups, count = self.applied
        self.applied = (groups + 1, count + len(items))
        self._commits.inc()
        self._items.inc(len(items))
        try:
            return self._apply_items(items)
        except Exception as error:  # handed to the callers, which answer for it
            return [error] * len(items)

    def _apply(self, jobs: list[_Job[Item]]) -> int:
        """Apply the jobs together and hand each waiting caller its outcome; return how many
        jobs were queued as the outcomes went out (what came later may be their callers')."""
        if not jobs:
            return self._jobs.qsize()
        outcomes = self._outcomes([job.item for job in jobs])
        answers: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Item], Any]]] = {}
        queued = self._jobs.qsize()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if job.loop is None:
                _settle([(job, outcome)])
            else:
                answers.setdefault(job.loop, []).append((job, outcome))
        for loop, settled in answers.items():
            # One wake-up of each event loop for all of its answers.
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop closed: nobody is waiting for these any more
                log.debug("event loop closed before %d answers of %s", len(settled), self.name)
        return queued


class _Waiter:
    """A blocking caller asleep until a leader settles its item (`set_result`, as a future)
    or hands it the lead (`lead`): one wake-up a caller, on a lock of its own. Waking every
    waiting caller at each turn's end, to find the few answered and the one to lead, cost
    each group a wake-up of every thread waiting (32 threads: 31 a group of 13)."""

    __slots__ = ("_asleep", "_outcome", "_settled")

    def __init__(self) -> None:
        self._asleep = threading.Lock()
        self._asleep.acquire()  # held until the caller is to wake
        self._outcome: Any = None
        self._settled = False

    def sleep(self) -> None:
        self._asleep.acquire()

    def lead(self) -> None:
        self._asleep.release()

    def done(self) -> bool:
        return self._settled

    def set_result(self, outcome: Any) -> None:
        self._outcome, self._settled = outcome, True
        self._asleep.release()

    set_exception = set_result  # `result` raises an exception it holds

    def result(self) -> Any:
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


def _settle(outcomes: list[tuple[_Job[Any], Any]]) -> None:
    for job, outcome in outcomes:
        future = job.future
        if future.done():  # the request was cancelled (the client went away)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
