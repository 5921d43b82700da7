"""The pure rules behind the webhook mirror: watermarks, tie-breaks, statuses, retry timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.domain.events import (
    Decision,
    changed_fields,
    compare_progress,
    decide,
    fetched_watermark,
    invoice_progress,
    refund_is_behind,
    retry_delay,
    subscription_progress,
    tollgate_status,
)

JAN = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_object_seen_first_is_applied() -> None:
    assert decide(stored_created=None, stored_event_id=None, incoming_created=5) is Decision.APPLY


def test_a_newer_event_is_applied_and_an_older_one_skipped() -> None:
    assert decide(stored_created=5, stored_event_id="evt_a", incoming_created=6) is Decision.APPLY
    assert decide(stored_created=5, stored_event_id="evt_a", incoming_created=4) is Decision.SKIP


def test_the_same_event_again_is_skipped_even_in_the_same_second() -> None:
    decision = decide(
        stored_created=5, stored_event_id="evt_a", incoming_created=5, incoming_event_id="evt_a"
    )
    assert decision is Decision.SKIP


def test_a_same_second_event_with_the_same_content_is_skipped() -> None:
    decision = decide(stored_created=5, stored_event_id="evt_a", incoming_created=5, differs=False)
    assert decision is Decision.SKIP


def test_a_same_second_event_that_differs_is_refetched_unless_progress_tells() -> None:
    common = {"stored_created": 5, "stored_event_id": "evt_a", "incoming_created": 5}
    assert decide(**common, differs=True) is Decision.REFETCH  # type: ignore[arg-type]
    assert decide(**common, differs=True, progress=1) is Decision.APPLY  # type: ignore[arg-type]
    assert decide(**common, differs=True, progress=-1) is Decision.SKIP  # type: ignore[arg-type]


def test_an_invoice_only_moves_forward() -> None:
    draft, open_, paid = (
        invoice_progress("draft", 0, 0),
        invoice_progress("open", 0, 0),
        invoice_progress("paid", 1, 2900),
    )
    assert compare_progress(paid, open_) == 1
    assert compare_progress(draft, open_) == -1
    assert compare_progress(invoice_progress("open", 2, 0), invoice_progress("open", 1, 0)) == 1
    assert compare_progress(open_, open_) == 0


def test_a_subscription_renewal_or_end_is_progress_but_a_status_change_is_not() -> None:
    later = JAN + timedelta(days=31)
    assert (
        compare_progress(
            subscription_progress("active", later), subscription_progress("active", JAN)
        )
        == 1
    )
    assert (
        compare_progress(
            subscription_progress("canceled", JAN), subscription_progress("active", JAN)
        )
        == 1
    )
    assert (
        compare_progress(
            subscription_progress("past_due", JAN), subscription_progress("active", JAN)
        )
        == 0
    )


def test_a_settled_refund_is_not_replaced_by_a_pending_one() -> None:
    assert refund_is_behind("pending", "succeeded")
    assert not refund_is_behind("succeeded", "pending")
    assert not refund_is_behind("succeeded", None)


@pytest.mark.parametrize(
    ("stripe_status", "at_period_end", "cancel_at", "expected"),
    [
        (None, False, None, "none"),
        ("active", False, None, "active"),
        ("active", True, None, "canceling"),
        ("trialing", False, JAN, "canceling"),
        ("past_due", True, None, "past_due"),
        ("canceled", True, JAN, "canceled"),
        ("unpaid", False, None, "unpaid"),
    ],
)
def test_tollgate_status_follows_stripe_plus_canceling_and_none(
    stripe_status: str | None, at_period_end: bool, cancel_at: datetime | None, expected: str
) -> None:
    status = tollgate_status(stripe_status, cancel_at_period_end=at_period_end, cancel_at=cancel_at)
    assert status == expected


def test_retry_delay_doubles_from_thirty_seconds_up_to_six_hours() -> None:
    assert retry_delay(1) == timedelta(seconds=30)
    assert retry_delay(2) == timedelta(seconds=60)
    assert retry_delay(5) == timedelta(seconds=480)
    assert retry_delay(50) == timedelta(hours=6)


def test_changed_fields_keep_only_what_differs() -> None:
    assert changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3}) == ({"b": 2}, {"b": 3})
    assert changed_fields(None, {"a": 1}) == ({}, {"a": 1})


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=8),
    st.randoms(),
)
def test_applying_events_in_any_order_ends_at_the_newest_distinct_second(
    events: list[tuple[int, int]],
    rng,  # type: ignore[no-untyped-def]
) -> None:
    # Each event is (created second, content); content "3" in the newest second is the truth
    # a refetch would return. The watermark must end on the newest second's content.
    newest = max(created for created, _ in events)
    truth = 3
    events = [*events, (newest, truth)]
    rng.shuffle(events)
    stored: tuple[int, int] | None = None
    for index, (created, content) in enumerate(events):
        decision = decide(
            stored_created=stored[0] if stored else None,
            stored_event_id=None,
            incoming_created=created,
            incoming_event_id=f"evt_{index}",
            differs=stored is None or stored[1] != content,
        )
        if decision is Decision.APPLY:
            stored = (created, content)
        elif decision is Decision.REFETCH:
            stored = (created, truth)
    assert stored is not None and stored[0] == newest
    newest_contents = {content for created, content in events if created == newest}
    assert stored[1] == (truth if len(newest_contents) > 1 else newest_contents.pop())


# -- the watermark of a row written from Stripe's current copy ---------------------------------

LIVE = {"livemode": True}
NO_CLOCK = {"livemode": False, "test_clock": None}


@pytest.mark.parametrize(
    ("event_created", "stripe_time", "copy", "expected"),
    [
        (100, None, NO_CLOCK, 100),  # Stripe's time unknown: the event's own second
        (100, 100, NO_CLOCK, 100),  # answered in the event's second: nothing gained
        (100, 101, NO_CLOCK, 100),
        (100, 110, NO_CLOCK, 109),  # read ten seconds later: vouches for second 109
        (100, 110, LIVE, 109),  # live mode has no test clocks
        (100, 110, {"livemode": False, "test_clock": "clock_1"}, 100),  # on a test clock
        (100, 110, {"livemode": False}, 100),  # test mode, the copy does not say
    ],
)
def test_a_fetched_copy_vouches_for_the_seconds_before_stripe_answered(
    event_created: int, stripe_time: int | None, copy: dict[str, object], expected: int
) -> None:
    assert fetched_watermark(event_created, stripe_time, copy) == expected


def test_after_a_late_copy_older_events_skip_and_newer_ones_are_decided_as_before() -> None:
    stored = fetched_watermark(100, 110, NO_CLOCK)  # 109
    assert decide(stored_created=stored, stored_event_id="evt_a", incoming_created=100) == (
        Decision.SKIP
    )
    assert decide(stored_created=stored, stored_event_id="evt_a", incoming_created=108) == (
        Decision.SKIP
    )
    # Of the copy's own last second: the order is unknown, so Stripe is asked again.
    assert decide(stored_created=stored, stored_event_id="evt_a", incoming_created=109) == (
        Decision.REFETCH
    )
    assert decide(stored_created=stored, stored_event_id="evt_a", incoming_created=110) == (
        Decision.APPLY
    )
