"""The hosted invoice page pays an open invoice, and `invoice_pdf` is a real PDF."""

from __future__ import annotations

import re

import httpx
import stripe

from tests.stripesim.test_invoices import _item
from tests.stripesim.test_subscriptions import clock_customer


def _open_invoice(client: stripe.StripeClient, amount: int = 4200) -> stripe.Invoice:
    _, customer = clock_customer(client)
    _item(client, customer, amount, description="Consulting (3 hours)")
    draft = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    return client.v1.invoices.finalize_invoice(draft.id)


def test_an_open_invoice_is_paid_from_its_hosted_page(client: stripe.StripeClient) -> None:
    invoice = _open_invoice(client)
    page = httpx.get(invoice.hosted_invoice_url)
    assert page.status_code == 200 and 'id="pay-form"' in page.text and "$42.00" in page.text
    paid = httpx.post(
        invoice.hosted_invoice_url,
        data={"card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123"},
    )
    assert paid.status_code == 200 and "Paid. Thank you." in paid.text
    assert 'id="pay-form"' not in paid.text
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.amount_paid, after.amount_remaining) == ("paid", 4200, 0)
    again = httpx.post(invoice.hosted_invoice_url, data={"card_number": "4242424242424242"})
    assert again.status_code == 402 and "because it is paid" in again.text


def test_a_declined_card_on_the_hosted_page_leaves_the_invoice_open(
    client: stripe.StripeClient,
) -> None:
    invoice = _open_invoice(client)
    declined = httpx.post(
        invoice.hosted_invoice_url,
        data={"card_number": "4000 0000 0000 0002", "card_expiry": "12 / 34", "card_cvc": "123"},
    )
    assert declined.status_code == 402 and 'id="error"' in declined.text
    # As at Stripe, 4000 0000 0000 0002 is declined as it is attached: no payment attempt.
    after = client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.amount_paid) == ("open", 0)


def test_invoice_pdf_is_a_valid_pdf_with_the_invoice_on_it(client: stripe.StripeClient) -> None:
    invoice = _open_invoice(client, 1999)
    answer = httpx.get(invoice.invoice_pdf)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    pdf = answer.content
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    # The cross-reference table points at each object exactly, as a viewer reads it.
    start = int(re.search(rb"startxref\n(\d+)\n", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[start:].startswith(b"xref\n")
    offsets = [int(o) for o in re.findall(rb"^(\d{10}) 00000 n $", pdf, flags=re.M)]
    for number, offset in enumerate(offsets, start=1):
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    assert rb"Consulting \(3 hours\)" in pdf and b"$19.99" in pdf  # parentheses escaped
    assert invoice.number is not None and invoice.number.encode() in pdf
