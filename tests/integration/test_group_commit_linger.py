"""The group-commit writer's linger: under load the next group waits a moment for the items on
their way; a lone item after a pause never waits."""

from __future__ import annotations

import asyncio
import threading
import time

from tollgate.db.unit_of_work import Database
from tollgate.services.group_commit import GroupWriter


def _writer(
    db: Database, linger: float, busy_window: float = 0.01
) -> tuple[GroupWriter[int, int], list[list[int]]]:
    groups: list[list[int]] = []

    def apply(items: list[int]) -> list[int]:
        groups.append(list(items))
        time.sleep(0.02)  # a commit's time: what comes meanwhile queues for the next group
        return [item * 10 for item in items]

    writer = GroupWriter(db, apply, name="test-linger", linger=linger, busy_window=busy_window)
    return writer, groups


def test_a_lone_item_after_a_pause_never_waits(db: Database) -> None:
    writer, groups = _writer(db, linger=30.0)

    async def run() -> float:
        await asyncio.gather(*(writer.apply(n) for n in range(1, 6)))  # shared commits
        await asyncio.sleep(0.05)  # a pause: the next item is alone again
        started = time.monotonic()
        assert await writer.apply(6) == 60
        return time.monotonic() - started

    try:
        took = asyncio.run(run())
    finally:
        writer.stop()
    assert groups[-1] == [6]
    assert took < 15  # nowhere near one linger of 30 s (generous: CI machines stall for seconds)


def test_under_load_the_items_on_their_way_share_the_next_commit(db: Database) -> None:
    # A wide window: however slow this machine is to come back, the next item counts as load.
    writer, groups = _writer(db, linger=0.3, busy_window=5.0)

    async def run() -> list[int]:
        # Five items share commits (load: whatever the first group takes, the rest queue
        # during its commit and share the next); the two next come 50 ms apart, as answered
        # callers come back, and meet in one group because the writer waits for them.
        first = await asyncio.gather(*(writer.apply(n) for n in range(1, 6)))
        await asyncio.sleep(0.1)  # the writer is waiting for the next item by now
        sixth = asyncio.ensure_future(writer.apply(6))
        await asyncio.sleep(0.05)
        seventh = await writer.apply(7)
        return [*first, await sixth, seventh]

    try:
        answers = asyncio.run(run())
    finally:
        writer.stop()
    assert answers == [10, 20, 30, 40, 50, 60, 70]
    assert groups[-1] == [6, 7]


def test_without_linger_the_next_item_goes_alone(db: Database) -> None:
    writer, groups = _writer(db, linger=0.0)

    async def run() -> None:
        await asyncio.gather(*(writer.apply(n) for n in range(1, 6)))
        await asyncio.sleep(0.005)
        sixth = asyncio.ensure_future(writer.apply(6))
        await asyncio.sleep(0.05)
        await writer.apply(7)
        await sixth

    try:
        asyncio.run(run())
    finally:
        writer.stop()
    assert groups[-2:] == [[6], [7]]


def test_the_callers_a_group_answered_share_one_commit_with_an_item_queued_meanwhile(
    db: Database,
) -> None:
    # Taking what queued during a commit at once would commit the sixth item alone and the
    # five answered callers' next items after it: groups alternating large and small.
    groups: list[list[int]] = []
    committing = threading.Event()

    def apply(items: list[int]) -> list[int]:
        groups.append(list(items))
        committing.set()
        time.sleep(0.02)
        return [item * 10 for item in items]

    writer = GroupWriter(db, apply, name="test-linger", linger=30.0, busy_window=5.0)

    async def caller(n: int) -> list[int]:
        first = await writer.apply(n)
        return [first, await writer.apply(n + 10)]  # back at once with its next item

    async def during_the_first_commit() -> list[int]:
        while not committing.is_set():
            await asyncio.sleep(0.001)
        return [await writer.apply(6)]

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(caller(n) for n in range(1, 6)), during_the_first_commit())

    started = time.monotonic()
    try:
        answers = asyncio.run(run())
    finally:
        writer.stop()
    assert answers == [[10, 110], [20, 120], [30, 130], [40, 140], [50, 150], [60]]
    assert groups == [[1, 2, 3, 4, 5], [6, 11, 12, 13, 14, 15]]
    assert time.monotonic() - started < 15  # it took them once all were queued (linger: 30 s)
