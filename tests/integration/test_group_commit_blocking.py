"""The group-commit writer's callers on threads of their own (`apply_blocking`): a lone caller
applies its item itself; callers that come while it does wait and share the next group; each
gets its own outcome, an error included, alike on either way."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tollgate.db.unit_of_work import Database
from tollgate.services.group_commit import GroupWriter


class Refused(Exception):
    pass


def test_a_lone_caller_and_the_callers_that_queue_behind_it_get_the_same_answers(
    db: Database,
) -> None:
    groups: list[list[int]] = []
    go = threading.Event()

    def apply(items: list[int]) -> list[int | BaseException]:
        groups.append(list(items))
        if items == [1]:
            assert go.wait(10)  # the others arrive while the lone caller applies its item
        if -1 in items and len(items) == 1:
            raise Refused("the whole group")
        return [Refused(f"item {item}") if item < 0 else item * 10 for item in items]

    writer: GroupWriter[int, int] = GroupWriter(db, apply, name="test-blocking")

    def call(item: int) -> int | str:
        try:
            return writer.apply_blocking(item)
        except Refused as error:
            return str(error)

    try:
        with ThreadPoolExecutor(5) as pool:
            first = pool.submit(call, 1)
            while not groups:  # the lone caller leads, with its item alone
                time.sleep(0.001)
            queued = [pool.submit(call, item) for item in (2, 3, -4, 5)]
            deadline = time.monotonic() + 5
            while len(writer._waiting) < 4 and time.monotonic() < deadline:
                time.sleep(0.001)
            go.set()
            answers = [first.result(), *(future.result() for future in queued)]
        # Alone again, each way: an answer, an item's own error, an error of the whole apply.
        alone = [call(6), call(-7), call(-1)]
    finally:
        writer.stop()
    assert answers == [10, 20, 30, "item -4", 50]
    assert alone == [60, "item -7", "the whole group"]
    assert groups[0] == [1]
    assert sorted(groups[1]) == [-4, 2, 3, 5]  # the four that waited share one group
    assert groups[2:] == [[6], [-7], [-1]]
    assert writer.applied == (5, 8)


def test_a_lone_caller_raises_what_the_whole_apply_raised(db: Database) -> None:
    def apply(items: list[int]) -> list[int]:
        raise Refused("nothing applied")

    writer: GroupWriter[int, int] = GroupWriter(db, apply, name="test-blocking-error")
    try:
        with pytest.raises(Refused, match="nothing applied"):
            writer.apply_blocking(1)
        with pytest.raises(Refused, match="nothing applied"):  # and the next caller too
            writer.apply_blocking(2)
    finally:
        writer.stop()
