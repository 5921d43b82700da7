"""ACH Direct Debit through the official SDK: `us_bank_account` PaymentMethods with Stripe's test
account numbers, invoices that stay open while the debit is processing, settlement by test clock."""

from __future__ import annotations

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripe_reference import example_keys
from tests.stripesim.conftest import WebhookSink
from tests.stripesim.test_subscriptions import DAY, FEB_1, T0, advance, invoices_of, price

HOUR = 3600
SUCCESS, INSUFFICIENT, CLOSED = "000123456789", "000222222227", "000111111113"


def bank_account(client: stripe.StripeClient, customer: str, account_number: str) -> str:
    """Attach a test bank account and make it the customer's default for invoices."""
    pm = client.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "us_bank_account": {
                "account_number": account_number,
                "routing_number": "110000000",
                "account_holder_type": "company",
            },
            "billing_details": {"name": "Jenny Rosen"},
        }
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": customer})
    client.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return str(pm.id)


def bank_customer(client: stripe.StripeClient, account_number: str) -> tuple[str, str]:
    """A test clock at T0 and a customer on it paying by ACH from `account_number`."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": T0})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    bank_account(client, customer.id, account_number)
    return clock.id, customer.id


def test_bank_payment_method_has_stripes_shape_and_refuses_other_numbers(
    client: stripe.StripeClient,
) -> None:
    pm = client.v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "us_bank_account": {"account_number": SUCCESS, "routing_number": "110000000"},
            "billing_details": {"name": "Jenny Rosen"},
        }
    )
    # Stripe's example is a card: a bank account has its own type's hash in place of `card`.
    assert set(pm.to_dict()) == example_keys("payment_method") - {"card"} | {"us_bank_account"}
    assert (pm.type, pm.us_bank_account.last4, pm.us_bank_account.routing_number) == (
        "us_bank_account",
        "6789",
        "110000000",
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.create(
            params={
                "type": "us_bank_account",
                "us_bank_account": {
                    "account_number": "000999999999",
                    "routing_number": "110000000",
                },
                "billing_details": {"name": "Jenny Rosen"},
            }
        )
    assert raised.value.param == "us_bank_account[account_number]"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.payment_methods.create(
            params={
                "type": "us_bank_account",
                "us_bank_account": {"account_number": SUCCESS, "routing_number": "110000000"},
            }
        )
    assert raised.value.param == "billing_details[name]"


def test_first_invoice_processes_four_days_then_is_paid(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = bank_customer(client, SUCCESS)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    assert sub.status == "incomplete"
    invoice = invoices_of(client, sub.id)[0]
    assert invoice.status == "open"
    pi = client.v1.payment_intents.list(params={"customer": customer}).data[0]
    assert pi.status == "processing"
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.payment_method_details.type) == ("pending", "us_bank_account")

    advance(client, clock, T0 + 4 * DAY - 1)  # longer than incomplete expiry: it waits
    assert client.v1.invoices.retrieve(invoice.id).status == "open"
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete"

    advance(client, clock, T0 + 4 * DAY)
    paid = client.v1.invoices.retrieve(invoice.id)
    assert (paid.status, paid.status_transitions.paid_at) == ("paid", T0 + 4 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    settled = client.v1.charges.retrieve(pi.latest_charge)
    assert settled.status == "succeeded"
    fee = client.v1.balance_transactions.retrieve(settled.balance_transaction).fee
    assert fee == 23  # 0.8 % of $29.00, rounded
    sim.webhooks.flush(timeout=10)
    types = [
        t
        for t in webhook_sink.types(webhook_sink.secret)
        if t.startswith(("invoice.pa", "payment_intent.", "charge."))
    ]
    assert types == [
        "payment_intent.created",
        "charge.pending",
        "payment_intent.processing",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]


@pytest.mark.parametrize(
    ("account", "code"),
    [
        (INSUFFICIENT, "insufficient_funds"),
        (CLOSED, "account_closed"),
        ("000111111116", "no_account"),
        ("000333333335", "debit_not_authorized"),
    ],
)
def test_renewal_debit_returned_goes_past_due(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink, account: str, code: str
) -> None:
    clock, customer = bank_customer(client, SUCCESS)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    advance(client, clock, T0 + 4 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    # The customer switches to an account whose debits come back.
    bank_account(client, customer, account)
    advance(client, clock, FEB_1 + 2 * HOUR)
    renewal = invoices_of(client, sub.id)[-1]
    assert (renewal.status, renewal.next_payment_attempt) == ("open", None)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"

    advance(client, clock, FEB_1 + 5 * DAY)
    failed = client.v1.invoices.retrieve(renewal.id)
    assert failed.status == "open"
    assert failed.next_payment_attempt is not None
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    charges = client.v1.charges.list(params={"customer": customer}).data
    assert (charges[0].status, charges[0].failure_code) == ("failed", code)
    sim.webhooks.flush(timeout=10)
    assert "invoice.payment_failed" in webhook_sink.types(webhook_sink.secret)


def test_a_payment_intent_off_any_clock_settles_by_the_simulators_clock(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    customer = client.v1.customers.create()
    pm = bank_account(client, customer.id, SUCCESS)
    pi = client.v1.payment_intents.create(
        params={
            "amount": 120000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm,
            "confirm": True,
        }
    )
    assert pi.status == "processing"
    httpx.post(f"{sim.url}/_sim/clock/advance", json={"seconds": 4 * DAY - HOUR})
    assert client.v1.payment_intents.retrieve(pi.id).status == "processing"
    httpx.post(f"{sim.url}/_sim/clock/advance", json={"seconds": 2 * HOUR})
    settled = client.v1.payment_intents.retrieve(pi.id)
    assert (settled.status, settled.amount_received) == ("succeeded", 120000)
    charge = client.v1.charges.retrieve(settled.latest_charge)
    fee = client.v1.balance_transactions.retrieve(charge.balance_transaction).fee
    assert fee == 500  # 0.8 % of $1,200 is $9.60: capped at $5
