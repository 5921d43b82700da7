"""The outbox: one row per key, written inside the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from tollgate.db.models import AppEvent, Notification
from tollgate.db.unit_of_work import Database
from tollgate.services.outbox import app_event_id, queue_app_event, queue_email

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_the_same_email_key_is_queued_once(db: Database) -> None:
    for _ in range(2):
        with db.write_transaction() as session:
            queue_email(
                session.connection(),
                customer_id="org_1",
                template="trial_ending",
                cause="sub_1:2026-12-01",
                facts={"trial_end": NOW, "amount": 1900},
                now=NOW,
            )
    with db.transaction() as session:
        rows = session.scalars(sa.select(Notification)).all()
    assert [(row.template, row.cause, row.status) for row in rows] == [
        ("trial_ending", "sub_1:2026-12-01", "pending")
    ]
    assert rows[0].facts == {"trial_end": NOW.isoformat(), "amount": 1900}


def test_the_same_app_event_is_queued_once_under_one_id(db: Database) -> None:
    for _ in range(2):
        with db.write_transaction() as session:
            queue_app_event(
                session.connection(),
                event_type="customer.subscription_status_changed",
                customer_id="org_1",
                data={"status": "past_due"},
                cause="sub_1:past_due:evt_1",
                now=NOW,
            )
    with db.transaction() as session:
        rows = session.scalars(sa.select(AppEvent)).all()
    expected = app_event_id("customer.subscription_status_changed", "org_1", "sub_1:past_due:evt_1")
    assert [row.id for row in rows] == [expected]


def test_a_rolled_back_change_takes_its_email_with_it(db: Database) -> None:
    class Abort(Exception):
        pass

    try:
        with db.write_transaction() as session:
            queue_email(
                session.connection(),
                customer_id="org_1",
                template="payment_succeeded",
                cause="in_1",
                facts={},
                now=NOW,
            )
            raise Abort
    except Abort:
        pass
    with db.transaction() as session:
        assert session.scalars(sa.select(Notification)).all() == []
