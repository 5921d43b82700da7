"""Credit notes, customer tax IDs and credit balances, the account's balance, customer sessions."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.stripesim.test_subscriptions import set_card


def _finalized_invoice(
    client: stripe.StripeClient, customer: str, amount: int, *, pay: bool = False
) -> Any:
    invoice = client.v1.invoices.create(
        params={"customer": customer, "collection_method": "send_invoice", "days_until_due": 30}
    )
    client.v1.invoice_items.create(
        params={"customer": customer, "invoice": invoice.id, "amount": amount, "currency": "usd"}
    )
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    if pay:
        invoice = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    return invoice


def test_a_credit_note_on_an_open_invoice_lowers_what_is_due(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create().id
    invoice = _finalized_invoice(client, customer, 4000)
    line = invoice.lines.data[0].id
    lines = [{"type": "invoice_line_item", "invoice_line_item": line, "amount": 1500}]
    preview = client.v1.credit_notes.preview(params={"invoice": invoice.id, "lines": lines})
    assert preview.total == 1500 and client.v1.credit_notes.list().data == []
    note = client.v1.credit_notes.create(params={"invoice": invoice.id, "lines": lines})
    assert (note.type, note.pre_payment_amount, note.status) == ("pre_payment", 1500, "issued")
    assert note.number == f"{invoice.number}-CN-01"
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.amount_remaining, after.pre_payment_credit_notes_amount) == (2500, 1500)
    client.v1.credit_notes.void_credit_note(note.id)
    assert client.v1.invoices.retrieve(invoice.id).amount_remaining == 4000
    whole = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 4000})
    assert whole.lines.data[0].type == "custom_line_item"
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"


def test_a_credit_note_on_a_paid_invoice_refunds_or_credits(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create().id
    invoice = _finalized_invoice(client, customer, 3000, pay=True)
    assert invoice.status == "paid"
    refunded = client.v1.credit_notes.create(
        params={"invoice": invoice.id, "amount": 1000, "refund_amount": 1000}
    )
    refund = client.v1.refunds.retrieve(refunded.refunds[0].refund)
    assert (refund.amount, refunded.type) == (1000, "post_payment")
    credited = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 500})
    assert client.v1.customers.retrieve(customer).balance == -500
    txn = client.v1.customers.balance_transactions.retrieve(
        customer, str(credited.customer_balance_transaction)
    )
    assert (txn.type, txn.amount, txn.credit_note) == ("credit_note", -500, credited.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 2000})
    assert client.v1.invoices.retrieve(invoice.id).post_payment_credit_notes_amount == 1500


def test_a_customer_credit_balance_pays_the_next_invoice(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create().id
    credit = client.v1.customers.balance_transactions.create(
        customer, params={"amount": -1200, "currency": "usd", "description": "Goodwill"}
    )
    assert (credit.type, credit.ending_balance) == ("adjustment", -1200)
    invoice = _finalized_invoice(client, customer, 1000)
    assert (invoice.status, invoice.amount_due, invoice.ending_balance) == ("paid", 0, -200)
    applied = client.v1.customers.balance_transactions.list(customer).data[0]
    assert (applied.type, applied.amount, applied.invoice) == (
        "applied_to_invoice",
        1000,
        invoice.id,
    )


def test_tax_ids_are_checked_listed_and_shown_on_invoices(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"name": "Ada GmbH", "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}]}
    ).id
    listed = client.v1.customers.tax_ids.list(customer).data
    assert [(t.country, t.verification.status) for t in listed] == [("DE", "verified")]
    failing = client.v1.customers.tax_ids.create(
        customer, params={"type": "gb_vat", "value": "GB111111111"}
    )
    assert failing.verification.status == "unverified"
    invoice = client.v1.invoices.create(params={"customer": customer})
    assert [t.value for t in invoice.customer_tax_ids] == ["DE123456789", "GB111111111"]
    client.v1.customers.tax_ids.delete(customer, failing.id)
    assert len(client.v1.customers.tax_ids.list(customer).data) == 1


def test_another_customers_objects_are_missing_under_a_customers_paths(
    client: stripe.StripeClient,
) -> None:
    owner = client.v1.customers.create().id
    other = client.v1.customers.create().id
    tax_id = client.v1.customers.tax_ids.create(
        owner, params={"type": "eu_vat", "value": "DE123456789"}
    )
    txn = client.v1.customers.balance_transactions.create(
        owner, params={"amount": -500, "currency": "usd"}
    )
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": owner})
    lookups = [
        (lambda c: client.v1.customers.tax_ids.retrieve(c, tax_id.id), "tax ID", tax_id.id),
        (lambda c: client.v1.customers.tax_ids.delete(c, tax_id.id), "tax ID", tax_id.id),
        (
            lambda c: client.v1.customers.balance_transactions.retrieve(c, txn.id),
            "customer balance transaction",
            txn.id,
        ),
        (
            lambda c: client.v1.customers.balance_transactions.update(
                c, txn.id, params={"description": "x"}
            ),
            "customer balance transaction",
            txn.id,
        ),
        (
            lambda c: client.v1.customers.payment_methods.retrieve(c, pm.id),
            "PaymentMethod",
            pm.id,
        ),
    ]
    for lookup, label, object_id in lookups:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            lookup(other)
        assert raised.value.http_status == 404
        assert (raised.value.code, raised.value.param) == ("resource_missing", "id")
        assert raised.value.user_message == f"No such {label}: '{object_id}'"
        with pytest.raises(stripe.InvalidRequestError) as raised:
            lookup("cus_missing")
        assert raised.value.user_message == "No such customer: 'cus_missing'"
    for listed in (
        client.v1.customers.tax_ids.list,
        client.v1.customers.balance_transactions.list,
        client.v1.customers.cash_balance_transactions.list,
    ):
        assert listed(other).data == []
        with pytest.raises(stripe.InvalidRequestError) as raised:
            listed("cus_missing")
        assert raised.value.http_status == 404
    assert [t.id for t in client.v1.customers.tax_ids.list(owner).data] == [tax_id.id]
    assert client.v1.customers.tax_ids.retrieve(owner, tax_id.id).id == tax_id.id
    assert client.v1.customers.payment_methods.retrieve(owner, pm.id).id == pm.id


def test_the_balance_holds_charges_less_fees_refunds_and_disputes(
    client: stripe.StripeClient,
) -> None:
    paid = client.v1.payment_intents.create(
        params={
            "amount": 10000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    charge = client.v1.charges.retrieve(str(paid.latest_charge))
    txn = client.v1.balance_transactions.retrieve(str(charge.balance_transaction))
    assert (txn.amount, txn.fee, txn.net, txn.type) == (10000, 320, 9680, "charge")
    client.v1.refunds.create(params={"charge": charge.id, "amount": 2000})
    balance = client.v1.balance.retrieve()
    assert balance.pending[0].amount == 9680 - 2000
    disputed = client.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    dispute = client.v1.disputes.list(params={"payment_intent": disputed.id}).data[0]
    withdrawal = dispute.balance_transactions[0]
    assert (withdrawal.amount, withdrawal.fee, withdrawal.reporting_category) == (
        -5000,
        1500,
        "dispute",
    )
    kinds = [t.type for t in client.v1.balance_transactions.list(params={"limit": 10}).data]
    assert sorted(kinds) == ["adjustment", "charge", "charge", "refund"]


def test_a_customer_session_enables_the_components_asked_for(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create().id
    set_card(client, customer, "pm_card_visa")
    session = client.v1.customer_sessions.create(
        params={"customer": customer, "components": {"pricing_table": {"enabled": True}}}
    )
    assert session.client_secret.startswith("cuss_secret_")
    assert session.components.pricing_table.enabled is True
    assert session.components.buy_button.enabled is False
    assert session.expires_at == session.created + 1800
