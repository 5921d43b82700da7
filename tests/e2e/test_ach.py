"""ACH bank debits through Tollgate's API, stripesim's test clocks and webhooks: an invoice paid by
bank debit stays unpaid while the debit is processing (about 4 days), then is paid; a debit
returned later goes through dunning like a declined card."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tests.e2e.conftest import DAY, World
from tollgate.db.models import Notification

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z
HOUR = 3600
SUCCESS, INSUFFICIENT = "000123456789", "000222222227"


def bank_account(world: World, stripe_customer_id: str, account_number: str) -> str:
    """Attach one of Stripe's test bank accounts and make it the customer's default."""
    pm = world.stripe.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "us_bank_account": {"account_number": account_number, "routing_number": "110000000"},
            "billing_details": {"name": "Ach Org"},
        }
    )
    world.stripe.v1.payment_methods.attach(pm.id, params={"customer": stripe_customer_id})
    world.stripe.v1.customers.update(
        stripe_customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return str(pm.id)


def invoice_statuses(world: World, customer_id: str) -> list[str]:
    listed = world.call("GET", f"/v1/customers/{customer_id}/invoices")
    return [invoice["status"] for invoice in listed["data"]]


def templates(world: World) -> list[str]:
    with world.db.transaction() as session:
        rows = session.scalars(sa.select(Notification).order_by(Notification.id)).all()
    return [row.template for row in rows]


def access(world: World, customer_id: str) -> Any:
    answer = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return answer["access_plan"], answer["status"]


def test_ach_pro_stays_unpaid_four_days_then_paid_and_a_returned_debit_goes_to_dunning(
    world: World,
) -> None:
    clock = world.test_clock(T0)
    customer = world.create_customer("ach-org", name="Ach Org", test_clock=clock)
    stripe_customer = customer["stripe_customer_id"]
    bank_account(world, stripe_customer, SUCCESS)
    world.put_subscription("ach-org", plan="pro", interval="month", trial_days=0)
    world.settle()
    assert invoice_statuses(world, "ach-org") == ["open"]
    assert "payment_succeeded" not in templates(world)
    # TOLLGATE_PROCESSING_ACCESS=keep (the default): the plan at once, the invoice still unpaid.
    assert access(world, "ach-org") == ("pro", "incomplete")

    world.advance(clock, T0 + 4 * DAY - HOUR)
    assert invoice_statuses(world, "ach-org") == ["open"]  # never paid while processing
    world.advance(clock, T0 + 4 * DAY + HOUR)
    assert invoice_statuses(world, "ach-org") == ["paid"]
    assert world.customer("ach-org")["status"] == "active"
    assert access(world, "ach-org") == ("pro", "active")
    assert templates(world).count("payment_succeeded") == 1

    # The next month's debit comes from an account that returns it, on day 5 after the renewal.
    bank_account(world, stripe_customer, INSUFFICIENT)
    subscription_id = world.subscription("ach-org")["stripe_subscription_id"]
    world.stripe.v1.subscriptions.update(
        subscription_id,
        params={
            "default_payment_method": world.stripe.v1.customers.retrieve(
                stripe_customer
            ).invoice_settings.default_payment_method
        },
    )
    item = world.stripe.v1.subscriptions.retrieve(subscription_id)["items"].data[0]
    renewal_at = int(item.current_period_end)
    world.advance(clock, renewal_at + 2 * HOUR)
    assert invoice_statuses(world, "ach-org") == ["open", "paid"]
    assert world.customer("ach-org")["status"] == "active"  # access kept while processing
    assert "payment_failed_soft" not in templates(world)
    assert access(world, "ach-org") == ("pro", "active")

    world.advance(clock, renewal_at + 5 * DAY)
    assert invoice_statuses(world, "ach-org") == ["open", "paid"]
    assert world.customer("ach-org")["status"] == "past_due"
    assert templates(world).count("payment_failed_soft") == 1
    assert access(world, "ach-org") == ("pro", "past_due")  # the dunning policy's first step


def test_with_wait_the_plan_waits_for_the_debit_to_settle(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_PROCESSING_ACCESS="wait")
    clock = world.test_clock(T0)
    customer = world.create_customer("waiter", name="Waiter", test_clock=clock)
    bank_account(world, customer["stripe_customer_id"], SUCCESS)
    world.put_subscription("waiter", plan="pro", interval="month", trial_days=0)
    world.settle()
    assert access(world, "waiter") == ("free", "incomplete")
    world.advance(clock, T0 + 4 * DAY - HOUR)
    assert access(world, "waiter") == ("free", "incomplete")
    world.advance(clock, T0 + 4 * DAY + HOUR)
    assert access(world, "waiter") == ("pro", "active")
    assert invoice_statuses(world, "waiter") == ["paid"]


def test_a_returned_first_debit_never_gives_the_plan_for_good(world: World) -> None:
    clock = world.test_clock(T0)
    customer = world.create_customer("bounced", name="Bounced", test_clock=clock)
    bank_account(world, customer["stripe_customer_id"], INSUFFICIENT)
    world.put_subscription("bounced", plan="pro", interval="month", trial_days=0)
    world.settle()
    assert access(world, "bounced") == ("pro", "incomplete")  # keep, while processing
    world.advance(clock, T0 + 5 * DAY)
    assert access(world, "bounced")[0] == "free"
    stripe_subscription = world.stripe.v1.subscriptions.list(
        params={"customer": customer["stripe_customer_id"], "status": "all"}
    ).data[0]
    assert stripe_subscription.status == "incomplete_expired"
    assert invoice_statuses(world, "bounced") != ["paid"]
