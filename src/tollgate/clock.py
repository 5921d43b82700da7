"""Time, passed in: logic never reads the wall clock itself."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...

    def wall(self) -> datetime:
        """Return the time others stamp with (a Stripe-Signature's `t` is Stripe's real time,
        a test clock's events included): `now` but for a clock moved ahead of the real one."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wall(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def wall(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta


class AdjustableClock:
    """The real clock, moved forward on request: `tollgate dev` keeps it with the simulator's
    test clock, so usage, trials and renewals are seen at the simulated time."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def move_to(self, moment: datetime) -> None:
        """Make `moment` now (never backwards: what was recorded stays in the past)."""
        if moment.tzinfo is None:
            raise ValueError("AdjustableClock needs an aware datetime")
        with self._lock:
            offset = moment - datetime.now(UTC)
            self._offset = max(self._offset, offset)
