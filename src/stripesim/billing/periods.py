"""Billing periods: intervals added to timestamps, the next boundary after a moment."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from stripesim.errors import StripeError
from stripesim.lists import as_int

DAY = 86400
# Approximate interval lengths, for limits (a test clock may advance two intervals at most).
_LONGEST = {"day": DAY, "week": 7 * DAY, "month": 31 * DAY, "year": 366 * DAY}


def add_interval(ts: int, interval: str, count: int) -> int:
    """Move `ts` by `count` intervals; months keep the day of month, clamped to the month's end."""
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(ts, UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def next_boundary(anchor: int, interval: str, count: int, after: int) -> int:
    """Return the first billing boundary `anchor + k intervals` strictly later than `after`."""
    if anchor > after:
        # A future anchor: step back to the last boundary at or before `after`, then forward.
        k = 0
        while add_interval(anchor, interval, -count * (k + 1)) > after:
            k += 1
        return add_interval(anchor, interval, -count * k)
    k = 1
    # Jump close first so long-running daily subscriptions stay cheap.
    if interval in ("day", "week"):
        step = (DAY if interval == "day" else 7 * DAY) * count
        k = max(1, (after - anchor) // step)
    while add_interval(anchor, interval, count * k) <= after:
        k += 1
    return add_interval(anchor, interval, count * k)


def interval_of(price: dict[str, Any]) -> tuple[str, int]:
    """Return a recurring price's (interval, interval_count)."""
    recurring = price.get("recurring") or {}
    return recurring.get("interval", "month"), int(recurring.get("interval_count") or 1)


def interval_seconds(interval: str, count: int) -> int:
    """Return the longest an interval can last, in seconds (a month is 31 days)."""
    return _LONGEST[interval] * count


def future_time(params: dict[str, Any], key: str, now: int) -> int:
    """Return a timestamp parameter that must lie after `now`."""
    value = as_int(params, key)
    assert value is not None
    if value <= now:
        raise StripeError(
            "Invalid timestamp: must be an integer Unix timestamp in the future.", param=key
        )
    return value


def anchor_choice(params: dict[str, Any]) -> str | None:
    """Return how an update or resume moves the anchor: `now`, `unchanged` or None."""
    # API 2026-10-28 passes `billing_cycle_anchor[type]`; older versions passed the bare value.
    anchor = params.get("billing_cycle_anchor")
    return str(anchor.get("type")) if isinstance(anchor, dict) else anchor
