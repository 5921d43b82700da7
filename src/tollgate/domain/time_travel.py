"""Moving a test clock forward: where `3d`, `12h`, `2w` or `1mo` lands, and in which steps.

Stripe advances a test clock at most two intervals of the shortest subscription on it at a time,
so a long move goes month by month.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tollgate.domain.metering import add_months

_MOVE = re.compile(r"\s*(\d+)\s*(m|min|h|d|w|mo|y)\s*")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_MOVE = timedelta(days=3 * 366)


def moved_time(now: datetime, text: str) -> datetime:
    """Return `now` moved forward by `text` (`90m`, `12h`, `3d`, `2w`, `1mo`, `1y`) or to an
    ISO 8601 time later than `now`; raise ValueError saying what is accepted."""
    match = _MOVE.fullmatch(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if amount <= 0:
            raise ValueError(f"{text!r}: move the clock forward by more than 0")
        if unit in ("mo", "y"):
            target = add_months(now, amount * (12 if unit == "y" else 1))
        else:
            target = now + timedelta(**{_UNITS[unit]: amount})
    else:
        try:
            target = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a move (90m, 12h, 3d, 2w, 1mo, 1y) or an ISO 8601 time"
            ) from None
        target = target if target.tzinfo else target.replace(tzinfo=UTC)
        if target <= now:
            raise ValueError(f"{text!r} is not after the clock's time, {now.isoformat()}")
    if target - now > MAX_MOVE:
        raise ValueError(f"{text!r}: move the clock at most three years at once")
    return target.astimezone(UTC)


def steps_to(now: datetime, target: datetime) -> list[datetime]:
    """Return the times to advance through to reach `target`, at most a month apart."""
    steps: list[datetime] = []
    at = now
    while True:
        at = min(add_months(at, 1), target)
        steps.append(at)
        if at >= target:
            return steps
