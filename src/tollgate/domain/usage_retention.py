"""How long raw usage events are kept: the retention, unless something may still need them."""

from __future__ import annotations

from datetime import datetime, timedelta

# A period stays open to voids and late events this long after it ends: its renewal may be seen
# late, and Stripe finalises the invoice about an hour after the period ends.
OPEN_AFTER_END = timedelta(days=7)
# Monthly partitions made ahead of the current month (PostgreSQL).
MONTHS_AHEAD = 2


def raw_usage_cutoff(
    *, now: datetime, retention: timedelta, still_needed: datetime | None
) -> datetime:
    """Return the time before which raw usage events may be pruned: past the retention, and
    never at or after the start of the oldest period still needed (open, not yet reported to
    Stripe, or counted and not yet folded)."""
    cutoff = now - retention
    return cutoff if still_needed is None else min(cutoff, still_needed)
