"""The trial-ending reminder from the mirror and the expiry of Checkout Sessions left open.

Both jobs run on SQLite and PostgreSQL; each is idempotent and on the worker's schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from stripesim.testing import RunningSim
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.models import Customer, Notification, Subscription
from tollgate.db.unit_of_work import Database
from tollgate.domain.subscriptions import trial_cause
from tollgate.jobs.schedule import SCHEDULE, Worker
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog
from tollgate.services.checkout_expiry import expire_stale_checkouts
from tollgate.services.outbox import queue_email
from tollgate.services.trial_reminders import remind_trials_ending

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def app(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(make_settings(db.url), clock=FrozenClock(NOW))
    yield built
    built.close()


def _trialing(app: Container, customer_id: str, trial_end: datetime, seats: int = 1) -> str:
    subscription_id = f"sub_{customer_id}"
    with app.db.transaction() as session:
        session.add(
            Customer(
                id=customer_id,
                email=f"billing@{customer_id}.example",
                stripe_customer_id=f"cus_{customer_id}",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        session.flush()
        session.add(
            Subscription(
                id=subscription_id,
                customer_id=customer_id,
                status="trialing",
                trial_start=NOW - timedelta(days=11),
                trial_end=trial_end,
                current_period_start=NOW - timedelta(days=11),
                current_period_end=trial_end,
                currency="usd",
                plan="pro",
                interval="month",
                seats=seats,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return subscription_id


def _mails(app: Container, template: str = "trial_ending") -> list[Any]:
    with app.db.engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(Notification.customer_id, Notification.cause, Notification.facts)
                .where(Notification.template == template)
                .order_by(Notification.customer_id)
            )
        )


def test_a_trial_whose_trial_will_end_never_came_is_reminded_once_three_days_before(
    app: Container,
) -> None:
    ending = _trialing(app, "ending-org", NOW + timedelta(days=2, hours=20), seats=2)
    _trialing(app, "later-org", NOW + timedelta(days=10))
    _trialing(app, "over-org", NOW - timedelta(hours=1))
    announced = _trialing(app, "announced-org", NOW + timedelta(days=1))
    # Stripe's trial_will_end reached this one: its webhook handler queued the email already.
    with app.db.write_connection() as connection:
        queue_email(
            connection,
            customer_id="announced-org",
            template="trial_ending",
            cause=trial_cause(announced, NOW + timedelta(days=1)),
            facts={"subscription": announced},
            now=NOW,
        )

    assert remind_trials_ending(db=app.db, catalog=app.catalog, clock=app.clock) == 2
    assert remind_trials_ending(db=app.db, catalog=app.catalog, clock=app.clock) == 2
    mails = _mails(app)
    assert [(mail.customer_id, mail.cause) for mail in mails] == [
        ("announced-org", trial_cause(announced, NOW + timedelta(days=1))),
        ("ending-org", trial_cause(ending, NOW + timedelta(days=2, hours=20))),
    ]
    facts = mails[1].facts
    # Pro is $29 a month per seat in the example catalog; two seats.
    assert facts["amount"] == {"amount": 5800, "currency": "usd"}
    assert (facts["plan"], facts["interval"], facts["subscription"]) == ("pro", "month", ending)
    assert datetime.fromisoformat(facts["trial_end"]) == NOW + timedelta(days=2, hours=20)

    # The trial is extended: a new end is a new reminder, when it is three days away again.
    with app.db.transaction() as session:
        session.get(Subscription, ending).trial_end = NOW + timedelta(days=9)  # type: ignore[union-attr]
    assert isinstance(app.clock, FrozenClock)
    app.clock.advance(timedelta(days=6, hours=1))
    # (The other trials have ended by now.)
    assert remind_trials_ending(db=app.db, catalog=app.catalog, clock=app.clock) == 1
    causes = [mail.cause for mail in _mails(app) if mail.customer_id == "ending-org"]
    assert sorted(causes) == sorted(
        [
            trial_cause(ending, NOW + timedelta(days=2, hours=20)),
            trial_cause(ending, NOW + timedelta(days=9)),
        ]
    )


def test_two_workers_at_once_run_the_new_jobs_once(app: Container) -> None:
    _trialing(app, "ending-org", NOW + timedelta(days=1))
    names = {"remind_trials_ending", "expire_open_checkouts"}
    schedule = tuple(job for job in SCHEDULE if job.name in names)
    assert len(schedule) == 2
    first = Worker(app, schedule, holder="one").run_due()
    second = Worker(app, schedule, holder="two").run_due()
    assert first["remind_trials_ending"] == 1
    assert second == {name: "skipped: another worker has it" for name in names}
    assert len(_mails(app)) == 1


# -- Checkout Sessions left open ----------------------------------------------------------------


@pytest.fixture
def api(db: Database, sim: RunningSim, make_settings: Callable[..., Settings]) -> Iterator[Any]:
    container = build_container(make_settings(db.url))
    sync_catalog(catalog=container.catalog, gateway=container.stripe)
    key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {key.secret}"
        yield client, container
    container.close()


def _open_checkout(client: TestClient, customer_id: str) -> str:
    made = client.post("/v1/customers", json={"id": customer_id, "email": f"a@{customer_id}.ex"})
    assert made.status_code == 201, made.text
    answer = client.post(
        f"/v1/customers/{customer_id}/checkout",
        json={
            "plan": "pro",
            "interval": "month",
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
        },
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["session_id"])


def test_checkout_sessions_tollgate_left_open_are_expired_after_the_setting_once(
    api: tuple[TestClient, Container], client: stripe.StripeClient
) -> None:
    http, container = api
    tollgate_session = _open_checkout(http, "slow-buyer")
    paid_elsewhere = _open_checkout(http, "other-buyer")
    client.v1.checkout.sessions.expire(paid_elsewhere)  # already closed when the job comes
    # A session some other code made in the same Stripe account is not Tollgate's to expire.
    price = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]
    foreign = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://elsewhere.example/ok",
        }
    )
    settings = container.settings
    assert settings.checkout_expire_after_minutes == 120

    def run(after: timedelta) -> Any:
        clock = FrozenClock(datetime.now(UTC) + after)
        return expire_stale_checkouts(
            db=container.db, gateway=container.stripe, settings=settings, clock=clock
        )

    young = run(timedelta(minutes=90))
    assert (young.stale, young.expired) == (0, 0)
    assert client.v1.checkout.sessions.retrieve(tollgate_session).status == "open"

    old = run(timedelta(minutes=121))
    assert (old.stale, old.expired) == (1, 1)
    assert client.v1.checkout.sessions.retrieve(tollgate_session).status == "expired"
    assert client.v1.checkout.sessions.retrieve(foreign.id).status == "open"
    again = run(timedelta(minutes=180))
    assert (again.stale, again.expired) == (0, 0)
