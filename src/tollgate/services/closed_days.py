"""The billing page chart's memory of days that have ended (`period_daily_usage`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any


class ClosedDays:
    """Daily buckets of days that have ended, kept per process (least recently used out);
    the container owns one, over its one database.

    Usage can only be recorded in the open period, so a past period's days never change; a
    day of the open period that has ended changes only if an event arrives late with an old
    timestamp, which `period_daily_usage` notices from the period's counter.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], list[tuple[datetime, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Any, ...]) -> list[tuple[datetime, int]] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], buckets: list[tuple[datetime, int]]) -> None:
        with self._lock:
            self._entries[key] = buckets
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
