"""A year of a Pro customer with failed payments, through stripesim's test clocks and webhooks.

Trial, conversion, monthly receipts, a decline recovered on the retry, then a card that fails
for good: every email is queued once, in order, with the amounts and dates Stripe billed, and
access is reduced and restored as the dunning policy says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tests.e2e.conftest import DAY, World
from tollgate.db.models import Customer, Notification

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z
HOUR = 3600
DECLINED_ONCE = 3  # the renewal whose first attempt fails, then the retry succeeds
DECLINED_FOR_GOOD = 7  # the renewal that is never paid


def set_card(world: World, stripe_customer_id: str, subscription_id: str, card: str) -> None:
    pm = world.stripe.v1.payment_methods.attach(card, params={"customer": stripe_customer_id})
    world.stripe.v1.customers.update(
        stripe_customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    world.stripe.v1.subscriptions.update(subscription_id, params={"default_payment_method": pm.id})


def outbox(world: World) -> list[tuple[str, dict[str, Any]]]:
    with world.db.transaction() as session:
        rows = session.scalars(sa.select(Notification).order_by(Notification.id)).all()
    return [(row.template, row.facts) for row in rows]


def dunning_access(world: World) -> str | None:
    with world.db.transaction() as session:
        return session.get(Customer, "pro-org").dunning_access  # type: ignore[union-attr]


def test_a_year_of_pro_with_failures_sends_each_email_once_in_order(world: World) -> None:
    clock = world.test_clock(T0)
    customer = world.create_customer("pro-org", name="Pro Org", test_clock=clock)
    stripe_customer = customer["stripe_customer_id"]
    paid = world.pay(world.checkout("pro-org", plan="pro", interval="month")["url"])
    assert paid.status_code == 303
    world.settle()
    trial_end = T0 + 14 * DAY
    world.advance(clock, trial_end - 3 * DAY + HOUR)  # trial_will_end
    world.advance(clock, trial_end + 2 * HOUR)  # the trial converts, the first bill is paid
    assert world.customer("pro-org")["status"] == "active"

    expected: list[tuple[str, Any]] = [
        ("trial_started", trial_end),
        ("trial_ending", trial_end),
        ("trial_converted", trial_end),
        ("payment_succeeded", 2900),
    ]
    subscription_id = world.subscription("pro-org")["stripe_subscription_id"]
    for renewal in range(1, 12):
        period_end = world.stripe.v1.subscriptions.retrieve(subscription_id)["items"].data[0]
        renewal_at = int(period_end.current_period_end)
        if renewal in (DECLINED_ONCE, DECLINED_FOR_GOOD):
            set_card(world, stripe_customer, subscription_id, "pm_card_chargeCustomerFail")
        world.advance(clock, renewal_at + 2 * HOUR)
        if renewal == DECLINED_ONCE:
            assert world.customer("pro-org")["status"] == "past_due"
            assert dunning_access(world) == "full"
            expected.append(("payment_failed_soft", 2900))
            set_card(world, stripe_customer, subscription_id, "pm_card_visa")
            world.advance(clock, renewal_at + 2 * HOUR + 4 * DAY)
            assert world.customer("pro-org")["status"] == "active"
            assert dunning_access(world) is None
            expected.append(("payment_recovered", 2900))
        elif renewal == DECLINED_FOR_GOOD:
            expected.append(("payment_failed_soft", 2900))
            assert dunning_access(world) == "full"
            world.advance(clock, renewal_at + 2 * HOUR + 4 * DAY)  # attempt 2
            assert dunning_access(world) == "reduced"
            expected.append(("payment_failed_warning", 2900))
            world.advance(clock, renewal_at + 2 * HOUR + 9 * DAY)  # attempt 3
            assert dunning_access(world) == "default"
            expected.append(("downgraded_payment_failed", 2900))
            world.advance(clock, renewal_at + 2 * HOUR + 17 * DAY)  # attempt 4: Stripe cancels
            assert world.customer("pro-org")["status"] in ("none", "canceled")
            # Stripe's final state decides access now; the customer was told already.
            assert dunning_access(world) is None
            break
        else:
            expected.append(("payment_succeeded", 2900))

    sent = outbox(world)
    assert [template for template, _ in sent] == [template for template, _ in expected]
    for (template, facts), (_, value) in zip(sent, expected, strict=True):
        if template.startswith("trial"):
            assert facts["trial_end"] == datetime.fromtimestamp(value, UTC).isoformat()
            assert facts["amount"] == {"amount": 2900, "currency": "usd"}
        elif template in ("payment_succeeded", "payment_recovered"):
            assert facts["amount_paid"] == {"amount": value, "currency": "usd"}
            assert facts["invoice_pdf"]
        else:
            assert facts["amount_due"] == {"amount": value, "currency": "usd"}
    failures = [
        facts for template, facts in sent if template.startswith(("payment_failed", "downgraded"))
    ]
    assert [facts["attempt_count"] for facts in failures] == [1, 1, 2, 3]
    warning = next(facts for template, facts in sent if template == "payment_failed_warning")
    assert warning["days_left"] in (4, 5)  # the next retry is 5 days after the second attempt
