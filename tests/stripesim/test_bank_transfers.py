"""Bank transfers (`customer_balance`) through the official SDK: funding instructions, an invoice
paid by transfers in parts, over-payments kept on the cash balance for the next invoice, the
hosted instructions, and the events Stripe sends."""

from __future__ import annotations

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink
from tests.stripesim.test_subscriptions import DAY, T0, advance, invoices_of, price


def transfer_subscription(client: stripe.StripeClient, amount: int = 10_000) -> tuple[str, str]:
    """A customer on a test clock subscribed to `amount` a month, invoices paid by transfer."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": T0})
    customer = client.v1.customers.create(params={"name": "Transfer Co", "test_clock": clock.id})
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price(client, amount)}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "payment_settings": {"payment_method_types": ["customer_balance"]},
        }
    )
    return clock.id, sub.id


def fund(client: stripe.StripeClient, customer: str, amount: int, reference: str = "") -> None:
    params: dict[str, object] = {"amount": amount, "currency": "usd"}
    if reference:
        params["reference"] = reference
    client.v1.test_helpers.customers.fund_cash_balance(customer, params=params)  # type: ignore[arg-type]


def test_an_invoice_paid_in_two_transfers_is_paid_once(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, sub_id = transfer_subscription(client)
    sub = client.v1.subscriptions.retrieve(sub_id)
    [invoice] = invoices_of(client, sub_id)
    assert (sub.status, invoice.status, invoice.amount_remaining) == ("active", "open", 10_000)
    assert invoice.payment_settings.payment_method_types == ["customer_balance"]
    page = httpx.get(invoice.hosted_invoice_url or "")
    assert 'id="transfer-reference"' in page.text and 'id="pay-form"' not in page.text

    fund(client, sub.customer, 4_000)  # type: ignore[arg-type]
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("open", 4_000, 6_000)
    assert "$60.00" in httpx.get(invoice.hosted_invoice_url or "").text

    fund(client, sub.customer, 6_000)  # type: ignore[arg-type]
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 10_000, 0)
    balance = client.v1.customers.cash_balance.retrieve(sub.customer)  # type: ignore[arg-type]
    assert balance.to_dict()["available"] == {}
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert types.count("invoice.paid") == 1
    assert types.count("customer_cash_balance_transaction.created") == 4
    assert "payment_intent.partially_funded" in types
    assert "cash_balance.funds_available" not in types
    txns = client.v1.customers.cash_balance_transactions.list(sub.customer)  # type: ignore[arg-type]
    assert [(t.type, t.net_amount, t.ending_balance) for t in reversed(txns.data)] == [
        ("funded", 4_000, 4_000),
        ("applied_to_payment", -4_000, 0),
        ("funded", 6_000, 6_000),
        ("applied_to_payment", -6_000, 0),
    ]


def test_an_over_payment_stays_on_the_cash_balance_and_pays_the_next_invoice(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, sub_id = transfer_subscription(client)
    customer = str(client.v1.subscriptions.retrieve(sub_id).customer)
    fund(client, customer, 25_000)
    balance = client.v1.customers.cash_balance.retrieve(customer)
    assert balance.to_dict()["available"] == {"usd": 15_000}
    sim.webhooks.flush(timeout=10)
    assert "cash_balance.funds_available" in webhook_sink.types(webhook_sink.secret)
    advance(client, clock, T0 + 32 * DAY)
    assert [i.status for i in invoices_of(client, sub_id)] == ["paid", "paid"]
    balance = client.v1.customers.cash_balance.retrieve(customer)
    assert balance.to_dict()["available"] == {"usd": 5_000}


def test_a_reference_pays_the_invoice_it_names_first(client: stripe.StripeClient) -> None:
    _, first = transfer_subscription(client)
    customer = str(client.v1.subscriptions.retrieve(first).customer)
    second = client.v1.invoices.create(
        params={
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 10,
            "payment_settings": {"payment_method_types": ["customer_balance"]},
        }
    )
    client.v1.invoice_items.create(
        params={"customer": customer, "invoice": second.id, "amount": 3_000, "currency": "usd"}
    )
    second = client.v1.invoices.finalize_invoice(second.id)
    reference = _reference(second)
    fund(client, customer, 3_000, reference)
    assert client.v1.invoices.retrieve(second.id).status == "paid"
    assert [i.status for i in invoices_of(client, first)] == ["open"]


def _reference(invoice: stripe.Invoice) -> str:
    """The transfer reference the hosted invoice page shows."""
    page = httpx.get(invoice.hosted_invoice_url or "").text
    start = page.index('id="transfer-reference">') + len('id="transfer-reference">')
    return page[start : page.index("<", start)]


def test_funding_instructions_and_bad_requests(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    customer = client.v1.customers.create(params={"name": "Instructions"}).id
    shown = client.v1.customers.funding_instructions.create(
        customer,
        params={
            "bank_transfer": {"type": "us_bank_transfer"},
            "currency": "usd",
            "funding_type": "bank_transfer",
        },
    )
    again = client.v1.customers.funding_instructions.create(
        customer,
        params={
            "bank_transfer": {"type": "us_bank_transfer"},
            "currency": "usd",
            "funding_type": "bank_transfer",
        },
    )
    aba = shown.bank_transfer.financial_addresses[0].aba
    assert aba is not None and aba.routing_number == "110000000"
    assert again.bank_transfer.financial_addresses[0].aba.account_number == aba.account_number  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.test_helpers.customers.fund_cash_balance(
            customer, params={"amount": -5, "currency": "usd"}
        )
    assert refused.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.funding_instructions.create(
            customer,
            params={
                "bank_transfer": {"type": "us_bank_transfer"},
                "currency": "eur",
                "funding_type": "bank_transfer",
            },
        )
    assert refused.value.param == "currency"
    assert client.v1.customers.cash_balance.retrieve(customer).to_dict()["available"] == {}
