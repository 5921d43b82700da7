"""Where a move of the dev clock lands, and the steps Stripe takes it in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tollgate.domain.time_travel import add_months, moved_time, steps_to

NOW = datetime(2026, 1, 31, 12, tzinfo=UTC)


def test_moves_in_minutes_hours_days_weeks_months_and_years() -> None:
    assert moved_time(NOW, "90m") == NOW + timedelta(minutes=90)
    assert moved_time(NOW, "12h") == NOW + timedelta(hours=12)
    assert moved_time(NOW, "3d") == NOW + timedelta(days=3)
    assert moved_time(NOW, "2w") == NOW + timedelta(weeks=2)
    assert moved_time(NOW, "1mo") == datetime(2026, 2, 28, 12, tzinfo=UTC)  # the month's last day
    assert moved_time(NOW, "1y") == datetime(2027, 1, 31, 12, tzinfo=UTC)
    assert moved_time(NOW, "2026-03-01T00:00:00Z") == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0d", "more than 0"),
        ("sideways", "is not a move"),
        ("2025-01-01", "is not after"),
        ("4y", "at most three years"),
    ],
)
def test_a_bad_move_says_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        moved_time(NOW, text)


def test_a_long_move_goes_a_month_at_a_time() -> None:
    target = add_months(NOW, 3) + timedelta(days=2)
    steps = steps_to(NOW, target)
    assert steps[-1] == target
    assert len(steps) == 4
    gaps = [later - earlier for earlier, later in zip([NOW, *steps[:-1]], steps, strict=True)]
    assert all(gap <= timedelta(days=31) for gap in gaps)
