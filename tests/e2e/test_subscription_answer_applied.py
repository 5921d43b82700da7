"""A direct subscription change (`PUT …/subscription`, a cancel, a resume) reaches the mirror with
Stripe's answer, before any webhook: the app's next check follows it. Stripe's own events, when
they arrive, still tell the app and the customer exactly once. stripesim's deliveries are held
while each change is made, so the webhook cannot be what the check sees; the subscriptions are on
a test clock, where every event shares one second with the answer's. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import World
from tests.e2e.test_billing_lifecycle import T0, paying_customer
from tollgate.bootstrap import build_container
from tollgate.config import Settings
from tollgate.db.tables import APP_EVENTS, AUDIT_LOG, NOTIFICATIONS, STRIPE_EVENTS
from tollgate.services.webhooks import apply_stripe_answer, mirrored_watermark


@contextmanager
def webhooks_held(world: World) -> Iterator[None]:
    """Hold stripesim's deliveries in its queue; deliver them all at the end."""
    world.sim.webhooks.stop()
    try:
        yield
    finally:
        world.sim.webhooks.start()
        world.settle()


def _told(world: World, customer_id: str) -> Counter[str]:
    """What the app and the customer were told: app webhooks and emails, by type."""
    with world.db.engine.connect() as connection:
        app = connection.execute(
            sa.select(APP_EVENTS.c.type).where(APP_EVENTS.c.customer_id == customer_id)
        ).scalars()
        told = Counter(f"app:{kind}" for kind in app)
        emails = connection.execute(
            sa.select(NOTIFICATIONS.c.template).where(NOTIFICATIONS.c.customer_id == customer_id)
        ).scalars()
        told.update(f"email:{template}" for template in emails)
    return told


def _entitlements(world: World, customer_id: str) -> dict[str, object]:
    found = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return {
        "plan": found["plan"],
        "status": found["status"],
        "runs": found["features"]["runs"]["included"],
    }


def test_the_answer_is_applied_before_the_webhook_which_still_tells_once(world: World) -> None:
    paying_customer(world, "acme", world.test_clock(T0), plan="pro")
    assert _entitlements(world, "acme")["plan"] == "pro"
    before = _told(world, "acme")

    # An upgrade with more seats: checked at once, before any webhook.
    with webhooks_held(world):
        world.put_subscription("acme", plan="team", interval="month", seats=4)
        assert _entitlements(world, "acme") == {"plan": "team", "status": "active", "runs": 250_000}
        assert world.subscription("acme")["seats"] == 4
        assert _told(world, "acme") == before  # the answer tells nobody anything
    upgraded = _told(world, "acme")
    assert upgraded - before == Counter({"app:customer.entitlements_changed": 1}), upgraded - before
    assert world.subscription("acme")["seats"] == 4

    # Cancel at period end, then resume: each shows at once.
    with webhooks_held(world):
        world.call("DELETE", "/v1/customers/acme/subscription", params={"at_period_end": "true"})
        assert _entitlements(world, "acme")["status"] == "canceling"
    with webhooks_held(world):
        world.call("POST", "/v1/customers/acme/subscription/resume")
        assert _entitlements(world, "acme")["status"] == "active"
    resumed = _told(world, "acme")

    # Cancel now: the customer is on Free at once; Stripe's deleted event tells the app of the
    # status change and the customer of the downgrade, once.
    with webhooks_held(world):
        world.call("DELETE", "/v1/customers/acme/subscription", params={"at_period_end": "false"})
        assert _entitlements(world, "acme") == {"plan": "free", "status": "none", "runs": 1_000}
        assert _told(world, "acme") == resumed
    ended = _told(world, "acme") - resumed
    assert ended["app:customer.subscription_status_changed"] == 1, ended
    assert ended["app:customer.entitlements_changed"] == 1, ended
    assert ended["email:downgraded_to_free"] == 1, ended

    # Each answer went through the handlers as an event Tollgate built, audited as the API's.
    with world.db.engine.connect() as connection:
        built = connection.execute(
            sa.select(STRIPE_EVENTS.c.status).where(STRIPE_EVENTS.c.id.like("api:%"))
        ).scalars()
        assert set(built) == {"succeeded"}
        actors = connection.execute(
            sa.select(AUDIT_LOG.c.actor).where(AUDIT_LOG.c.object_type == "subscription")
        ).scalars()
        assert "api" in set(actors)


def test_a_new_subscription_is_mirrored_from_the_answer(world: World) -> None:
    stripe_id = world.create_customer("globex", test_clock=world.test_clock(T0))[
        "stripe_customer_id"
    ]
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.settle()
    before = _told(world, "globex")
    with webhooks_held(world):
        made = world.put_subscription("globex", plan="pro", interval="month", trial_days=0)
        assert made["status"] == "active"
        assert _entitlements(world, "globex")["plan"] == "pro"
        assert _told(world, "globex") == before
    # As without the answer applied: Stripe's created event (incomplete, while the first
    # invoice is paid) and its updated one (active) tell the app, each once.
    with world.db.engine.connect() as connection:
        statuses = connection.execute(
            sa.select(APP_EVENTS.c.data)
            .where(
                APP_EVENTS.c.customer_id == "globex",
                APP_EVENTS.c.type == "customer.subscription_status_changed",
            )
            .order_by(APP_EVENTS.c.created_at, APP_EVENTS.c.id)
        ).scalars()
        assert [data["status"] for data in statuses] == ["incomplete", "active"]
    told = _told(world, "globex") - before
    assert told["app:customer.entitlements_changed"] == 2, told
    assert told["email:payment_succeeded"] == 1, told


def test_an_answer_made_over_another_row_is_checked_with_stripe(world: World) -> None:
    """The answer replaces the row only while the row is the one read before the write; if an
    event of the same second changed it meanwhile, Stripe is asked, not the answer trusted."""
    paying_customer(world, "initech", world.test_clock(T0), plan="team", seats=3)
    subscription_id = world.subscription("initech")["stripe_subscription_id"]
    app = world.container
    before = mirrored_watermark(app.db, subscription_id)
    assert before is not None
    # An answer with 7 seats, as if Stripe had answered a write with them (it has 3).
    answer = app.stripe.retrieve_subscription(subscription_id)
    answer["items"]["data"][0]["quantity"] = 7

    def apply(made_over: tuple[int, str]) -> None:
        apply_stripe_answer(
            db=app.db,
            gateway=app.stripe,
            subscription=answer,
            before=made_over,
            account=None,
            clock=app.clock,
            dunning=app.dunning_policy,
        )

    # Made over another row of the same second: Stripe's own copy (3 seats) is applied.
    apply((before[0], "evt_another_row"))
    assert world.subscription("initech")["seats"] == 3
    # Made over the row as it is: the answer is newer than it, and is applied as it is.
    apply(mirrored_watermark(app.db, subscription_id) or before)
    assert world.subscription("initech")["seats"] == 7


def test_an_answer_that_cannot_be_applied_leaves_the_change_to_the_webhook(
    world: World, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Stripe unreachable when the answer needs a read: nothing raises (the request that made
    the change succeeds), the log says why, and the mirror keeps what it had."""
    paying_customer(world, "hooli", world.test_clock(T0), plan="team", seats=3)
    subscription_id = world.subscription("hooli")["stripe_subscription_id"]
    answer = world.container.stripe.retrieve_subscription(subscription_id)
    answer["items"]["data"][0]["quantity"] = 7
    before = mirrored_watermark(world.db, subscription_id)
    assert before is not None
    cut_off = build_container(
        make_settings(world.db.url, STRIPE_API_BASE="http://127.0.0.1:9", STRIPE_MAX_RETRIES=0)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="tollgate.webhooks"):
            apply_stripe_answer(
                db=cut_off.db,
                gateway=cut_off.stripe,
                subscription=answer,
                before=(before[0], "evt_another_row"),  # so Stripe must be asked
                account=None,
                clock=cut_off.clock,
                dunning=cut_off.dunning_policy,
            )
    finally:
        cut_off.close()
    assert f"could not apply Stripe's answer for {subscription_id}" in caplog.text
    assert world.subscription("hooli")["seats"] == 3
