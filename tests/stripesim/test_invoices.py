"""Invoices, invoice items, coupons and tax rates through the official SDK: amounts are computed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape
from tests.stripesim.test_subscriptions import (
    DAY,
    FEB_1,
    MAR_1,
    T0,
    advance,
    clock_customer,
    invoices_of,
    price,
)


def _item(client: stripe.StripeClient, customer: str, amount: int, **extra: Any) -> Any:
    return client.v1.invoice_items.create(
        params={"customer": customer, "amount": amount, "currency": "usd", **extra}
    )


def test_manual_invoice_lifecycle_draft_open_paid(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, customer = clock_customer(client)
    item = _item(client, customer, 1500, description="Setup fee")
    assert_stripe_shape(item, "invoiceitem")
    assert item.invoice is None
    draft = client.v1.invoices.create(
        params={
            "customer": customer,
            "pending_invoice_items_behavior": "include",
            "metadata": {"k": "v"},
        }
    )
    assert (draft.status, draft.number, draft.billing_reason, draft.auto_advance) == (
        "draft",
        None,
        "manual",
        False,
    )
    assert (draft.subtotal, draft.total, draft.amount_due) == (1500, 1500, 1500)
    updated = client.v1.invoices.update(draft.id, params={"description": "Thanks"})
    assert updated.description == "Thanks"
    opened = client.v1.invoices.finalize_invoice(draft.id)
    assert opened.status == "open"
    assert opened.number.endswith("-0001")
    assert opened.status_transitions.finalized_at == T0
    assert client.v1.invoice_items.retrieve(item.id).invoice == draft.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.delete(item.id)
    paid = client.v1.invoices.pay(draft.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining, paid.attempt_count) == (
        "paid",
        1500,
        0,
        1,
    )
    assert_stripe_shape(paid, "invoice")
    sim.webhooks.flush(timeout=10)
    types = [
        t
        for t in webhook_sink.types(webhook_sink.secret)
        if t.startswith(("invoice", "invoiceitem"))
    ]
    assert types == [
        "invoiceitem.created",
        "invoice.created",
        "invoice.updated",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]


def test_pending_items_are_excluded_by_default_and_deletable(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    item = _item(client, customer, 700)
    draft = client.v1.invoices.create(params={"customer": customer})
    assert draft.lines.data == []
    assert client.v1.invoice_items.update(item.id, params={"amount": 900}).amount == 900
    assert client.v1.invoice_items.delete(item.id).deleted is True
    assert client.v1.invoice_items.list(params={"customer": customer}).data == []


def test_declined_pay_is_a_card_error_and_counts_the_attempt(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, customer = clock_customer(client, card="pm_card_chargeCustomerFail")
    _item(client, customer, 1000)
    invoice = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.CardError) as raised:
        client.v1.invoices.pay(invoice.id)
    assert raised.value.http_status == 402
    again = client.v1.invoices.retrieve(invoice.id)
    assert (again.status, again.attempt_count, again.attempted) == ("open", 1, True)
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert paid.status == "paid"
    sim.webhooks.flush(timeout=10)
    assert "invoice.payment_failed" in webhook_sink.types(webhook_sink.secret)


def test_void_mark_uncollectible_and_paid_out_of_band(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, customer = clock_customer(client)
    invoices = []
    for amount in (100, 200, 300):
        _item(client, customer, amount)
        created = client.v1.invoices.create(
            params={"customer": customer, "pending_invoice_items_behavior": "include"}
        )
        invoices.append(client.v1.invoices.finalize_invoice(created.id))
    assert client.v1.invoices.void_invoice(invoices[0].id).status == "void"
    assert client.v1.invoices.mark_uncollectible(invoices[1].id).status == "uncollectible"
    oob = client.v1.invoices.pay(invoices[2].id, params={"paid_out_of_band": True})
    assert (oob.status, oob.amount_remaining) == ("paid", 0)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(invoices[2].id)
    assert [i.id for i in client.v1.invoices.list(params={"status": "void"}).data] == [
        invoices[0].id
    ]
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert "invoice.voided" in types and "invoice.marked_uncollectible" in types


def test_deleting_a_draft_invoice(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    draft = client.v1.invoices.create(params={"customer": customer})
    assert client.v1.invoices.delete(draft.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.retrieve(draft.id)


def test_send_invoice_with_days_until_due_goes_past_due(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client, card=None, email="billing@example.com")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    assert (sub.status, sub.days_until_due, sub.collection_method) == ("active", 30, "send_invoice")
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.due_date, invoice.attempt_count) == ("open", T0 + 30 * DAY, 0)
    assert client.v1.invoices.send_invoice(invoice.id).status == "open"
    advance(client, clock, T0 + 30 * DAY + 60)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    advance(client, clock, FEB_1 + 2 * 3600)
    renewal = invoices_of(client, sub.id)[-1]
    assert (renewal.status, renewal.due_date) == ("open", FEB_1 + 3600 + 30 * DAY)
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert types.count("invoice.sent") == 3  # two finalized invoices and one explicit send
    assert "invoice.overdue" in types


# -- coupons and tax rates ------------------------------------------------------------------------


def test_coupon_and_exclusive_tax_rate_in_subscription_totals(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    coupon = client.v1.coupons.create(
        params={"percent_off": 25, "duration": "forever", "name": "Quarter"}
    )
    assert_stripe_shape(coupon, "coupon")
    vat = client.v1.tax_rates.create(
        params={"display_name": "VAT", "percentage": 10, "inclusive": False, "jurisdiction": "DE"}
    )
    assert_stripe_shape(vat, "tax_rate")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "discounts": [{"coupon": coupon.id}],
            "default_tax_rates": [vat.id],
            "expand": ["latest_invoice", "discounts"],
        }
    )
    invoice = sub.latest_invoice
    assert invoice.subtotal == 2900
    assert invoice.total_discount_amounts[0].amount == 725
    assert invoice.total_taxes[0].amount == 218  # 10 % of 2175, rounded half up
    assert invoice.total_taxes[0].tax_behavior == "exclusive"
    assert (invoice.total_excluding_tax, invoice.total, invoice.amount_paid) == (2175, 2393, 2393)
    assert sub.discounts[0].source.coupon == coupon.id
    assert client.v1.coupons.retrieve(coupon.id).times_redeemed == 1
    advance(client, clock, FEB_1 + 2 * 3600)
    assert invoices_of(client, sub.id)[-1].amount_paid == 2393  # forever keeps discounting


def test_once_coupon_and_inclusive_tax_rate(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    coupon = client.v1.coupons.create(
        params={"amount_off": 500, "currency": "usd", "duration": "once"}
    )
    vat = client.v1.tax_rates.create(
        params={"display_name": "VAT", "percentage": 20, "inclusive": True}
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client), "tax_rates": [vat.id]}],
            "discounts": [{"coupon": coupon.id}],
            "expand": ["latest_invoice"],
        }
    )
    first = sub.latest_invoice
    assert (first.subtotal, first.total, first.total_excluding_tax) == (2900, 2400, 2000)
    assert first.total_taxes[0].amount == 400
    assert first.lines.data[0].taxes[0].tax_rate_details.tax_rate == vat.id
    advance(client, clock, FEB_1 + 2 * 3600)
    second = invoices_of(client, sub.id)[-1]
    assert (second.total, second.total_discount_amounts) == (2900, [])
    assert second.total_taxes[0].amount == 483  # 2900 x 20/120
    assert client.v1.subscriptions.retrieve(sub.id).discounts == []


def test_repeating_coupon_stops_after_its_months(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    coupon = client.v1.coupons.create(
        params={"percent_off": 50, "duration": "repeating", "duration_in_months": 1}
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    advance(client, clock, FEB_1 + 2 * 3600)
    advance(client, clock, MAR_1 + 2 * 3600)
    assert [i.amount_paid for i in invoices_of(client, sub.id)] == [1450, 2900, 2900]


def test_coupon_and_tax_rate_crud(client: stripe.StripeClient) -> None:
    coupon = client.v1.coupons.create(
        params={"id": "SPRING", "percent_off": 12.5, "max_redemptions": 1}
    )
    assert (coupon.id, coupon.percent_off, coupon.duration) == ("SPRING", 12.5, "once")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.coupons.create(params={"id": "SPRING", "percent_off": 10})
    assert client.v1.coupons.update("SPRING", params={"name": "Spring"}).name == "Spring"
    assert [c.id for c in client.v1.coupons.list().data] == ["SPRING"]
    assert client.v1.coupons.delete("SPRING").deleted is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.coupons.create(params={"amount_off": 100})
    assert raised.value.param == "currency"
    rate = client.v1.tax_rates.create(
        params={"display_name": "GST", "percentage": 5, "inclusive": False}
    )
    assert client.v1.tax_rates.update(rate.id, params={"active": False}).active is False
    assert client.v1.tax_rates.list(params={"active": True}).data == []
    assert [r.id for r in client.v1.tax_rates.list(params={"active": False}).data] == [rate.id]


def test_an_amount_coupon_takes_its_currency_options_amount_off_a_euro_invoice(
    client: stripe.StripeClient,
) -> None:
    coupon = client.v1.coupons.create(
        params={
            "amount_off": 1000,
            "currency": "usd",
            "currency_options": {"eur": {"amount_off": 900}},
            "duration": "forever",
        }
    )
    assert_stripe_shape(coupon, "coupon")
    assert "currency_options" not in coupon  # only when expanded, as at Stripe
    shown = client.v1.coupons.retrieve(coupon.id, params={"expand": ["currency_options"]})
    assert shown.currency_options.to_dict() == {
        "usd": {"amount_off": 1000},
        "eur": {"amount_off": 900},
    }

    def first_invoice(currency: str) -> Any:
        _, customer = clock_customer(client)
        return client.v1.subscriptions.create(
            params={
                "customer": customer,
                "items": [{"price": price(client, 2200, currency=currency)}],
                "discounts": [{"coupon": coupon.id}],
                "expand": ["latest_invoice"],
            }
        ).latest_invoice

    invoice = first_invoice("eur")
    assert (invoice.currency, invoice.subtotal, invoice.total) == ("eur", 2200, 1300)
    assert first_invoice("gbp").total == 2200  # no amount in that currency: nothing off
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.coupons.create(
            params={"percent_off": 10, "currency_options": {"eur": {"amount_off": 1}}}
        )
    assert raised.value.param == "currency_options"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.coupons.create(
            params={
                "amount_off": 100,
                "currency": "usd",
                "currency_options": {"eur": {"amount_off": 0}},
            }
        )
    assert raised.value.param == "currency_options[eur][amount_off]"


def test_a_coupon_applied_to_products_discounts_only_their_lines(
    client: stripe.StripeClient,
) -> None:
    pro = price(client, 2900, name="Pro")
    extra = price(client, 500, name="Extra")
    product = client.v1.prices.retrieve(pro).product
    coupon = client.v1.coupons.create(
        params={"percent_off": 20, "duration": "forever", "applies_to": {"products": [product]}}
    )
    _, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": pro}, {"price": extra}],
            "discounts": [{"coupon": coupon.id}],
            "expand": ["latest_invoice"],
        }
    )
    invoice = sub.latest_invoice
    assert (invoice.subtotal, invoice.total_discount_amounts[0].amount) == (3400, 580)


# -- amounts from prices --------------------------------------------------------------------------


def _invoice_for(client: stripe.StripeClient, customer: str, price_id: str, quantity: int) -> Any:
    client.v1.invoice_items.create(
        params={"customer": customer, "pricing": {"price": price_id}, "quantity": quantity}
    )
    draft = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    return client.v1.invoices.finalize_invoice(draft.id)


def test_tiered_transform_and_decimal_prices_compute_line_amounts(
    client: stripe.StripeClient,
) -> None:
    _, customer = clock_customer(client)
    product = client.v1.products.create(params={"name": "API"}).id
    graduated = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product,
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 10, "unit_amount": 100},
                {"up_to": "inf", "unit_amount": 50, "flat_amount": 200},
            ],
        }
    ).id
    volume = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product,
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": [{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "unit_amount": 50}],
        }
    ).id
    packs = client.v1.prices.create(
        params={
            "currency": "usd",
            "product": product,
            "unit_amount": 1000,
            "transform_quantity": {"divide_by": 100, "round": "up"},
        }
    ).id
    sub_cent = client.v1.prices.create(
        params={"currency": "usd", "product": product, "unit_amount_decimal": "0.35"}
    ).id
    assert _invoice_for(client, customer, graduated, 15).total == 1000 + 200 + 250
    assert _invoice_for(client, customer, volume, 15).total == 750
    assert _invoice_for(client, customer, packs, 250).total == 3000
    assert _invoice_for(client, customer, sub_cent, 1001).total == 350  # 350.35 rounds to 350


def test_metered_usage_is_billed_at_period_end_from_meter_events(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Runs",
            "event_name": "runs",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        }
    )
    metered = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount_decimal": "2.5",
            "product_data": {"name": "Runs"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    ).id
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": metered}]}
    )
    assert client.v1.invoices.retrieve(sub.latest_invoice).amount_due == 0
    for day, value in ((2, 40), (20, 61)):
        advance(client, clock, T0 + day * DAY)
        client.v1.billing.meter_events.create(
            params={
                "event_name": "runs",
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            }
        )
    upcoming = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert upcoming.amount_due == 253  # 101 x 2.5¢ = 252.5, rounded half up
    advance(client, clock, FEB_1 + 2 * 3600)
    renewal = invoices_of(client, sub.id)[-1]
    line = renewal.lines.data[0]
    assert (line.quantity, line.amount, line.period.start, line.period.end) == (101, 253, T0, FEB_1)
    assert (renewal.period_start, renewal.period_end) == (T0, FEB_1)
    assert renewal.amount_paid == 253


def test_lines_paginate_in_invoice_order(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    ids = [_item(client, customer, 100 * (n + 1)).id for n in range(5)]
    draft = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    page = client.v1.invoices.line_items.list(draft.id, params={"limit": 2})
    assert page.has_more is True
    lines = list(
        client.v1.invoices.line_items.list(draft.id, params={"limit": 2}).auto_paging_iter()
    )
    assert [line.parent.invoice_item_details.invoice_item for line in lines] == ids
    assert draft.total == 1500


def test_customer_balance_credit_reduces_the_next_invoice(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client, balance=-500)
    _item(client, customer, 1200)
    draft = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    opened = client.v1.invoices.finalize_invoice(draft.id)
    assert (opened.starting_balance, opened.amount_due, opened.ending_balance) == (-500, 700, 0)
    assert client.v1.customers.retrieve(customer).balance == 0


def test_auto_advance_draft_finalizes_and_charges_after_an_hour(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    _item(client, customer, 2500)
    draft = client.v1.invoices.create(
        params={
            "customer": customer,
            "pending_invoice_items_behavior": "include",
            "auto_advance": True,
        }
    )
    assert draft.automatically_finalizes_at == T0 + 3600
    advance(client, clock, T0 + 2 * 3600)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid) == ("paid", 2500)


def test_invoice_search_and_hosted_page(client: stripe.StripeClient, sim: RunningSim) -> None:
    _, customer = clock_customer(client)
    _item(client, customer, 4200, description="Consulting")
    draft = client.v1.invoices.create(
        params={"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    opened = client.v1.invoices.finalize_invoice(draft.id)
    found = client.v1.invoices.search(params={"query": f"customer:'{customer}' AND status:'open'"})
    assert [i.id for i in found.data] == [opened.id]
    page = httpx.get(opened.hosted_invoice_url)
    assert page.status_code == 200
    assert "Consulting" in page.text and "$42.00" in page.text
