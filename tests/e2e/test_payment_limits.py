"""Payment-method limits by amount (TOLLGATE_CARD_LIMITS) on direct subscriptions: a card above
the limit is refused with a clear 4xx and nothing is made in Stripe, while a bank debit is
accepted."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.conftest import World
from tests.e2e.test_ach import SUCCESS, bank_account


def test_a_card_above_the_limit_is_refused_while_ach_is_accepted(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_CARD_LIMITS="usd:2000,eur:2000")  # Pro is $29.00 a month
    card = str(world.create_customer("card-org")["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": card})
    world.stripe.v1.customers.update(
        card, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    refused = world.put_subscription(
        "card-org", expect=400, plan="pro", interval="month", trial_days=0
    )
    assert refused["error"]["type"] == "payment_method_not_allowed"
    assert "us_bank_account or customer_balance" in refused["error"]["message"]
    assert refused["error"]["param"] == "payment_method"
    assert not world.stripe.v1.subscriptions.list(params={"customer": card}).data
    assert world.subscription("card-org")["status"] == "none"
    # A trial charges nothing now: the limit does not apply yet.
    world.put_subscription("card-org", plan="pro", interval="month")

    bank = str(world.create_customer("bank-org")["stripe_customer_id"])
    bank_account(world, bank, SUCCESS)
    accepted = world.put_subscription("bank-org", plan="pro", interval="month", trial_days=0)
    assert (accepted["plan"], accepted["status"]) == ("pro", "incomplete")  # the debit processes
