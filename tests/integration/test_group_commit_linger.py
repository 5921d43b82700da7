"""The group-commit writer's linger: under load the next group waits a moment for the items on
their way; a lone item after a pause never waits."""

from __future__ import annotations

import asyncio
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
    writer, groups = _writer(db, linger=5.0)

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
    assert took < 2.5  # nowhere near one linger of 5 s


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
