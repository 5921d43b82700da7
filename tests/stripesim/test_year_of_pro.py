"""A year of a Pro subscription on a test clock: 12 renewals, a recovered decline, a final unpaid.

Pro is $29/month plus metered runs (the first 1,000 runs a month included, then 2¢ each) billed
from meter events at each period end. Renewal 5 is declined once and recovered by the first
retry after the card is fixed; renewal 12 is declined on every retry and the subscription ends
`unpaid` (the simulator's billing setting `subscription_status_after_final_attempt=unpaid`).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape
from tests.stripesim.test_subscriptions import advance, clock_customer, invoices_of, set_card

HOUR = 3600
DAY = 86400
BASE = 2900
INCLUDED_RUNS = 1000
RUN_PRICE = 2  # cents per run above the included runs
DECLINED_ONCE = 5
DECLINED_FOR_GOOD = 12


def month_start(index: int) -> int:
    """1 January 2026 moved by `index` months."""
    year, month = divmod(index, 12)
    return int(datetime(2026 + year, month + 1, 1, tzinfo=UTC).timestamp())


def runs_in_period(index: int) -> list[int]:
    """Meter event values sent in billing period `index` (0 = January)."""
    return [600 + 50 * index, 300 + 25 * index]


def expected_overage(index: int) -> int:
    return max(sum(runs_in_period(index)) - INCLUDED_RUNS, 0) * RUN_PRICE


def _setup(client: stripe.StripeClient) -> tuple[str, str, dict[str, Any]]:
    clock, customer = clock_customer(client, email="owner@example.com", name="Ada")
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Runs",
            "event_name": "runs",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "runs"},
        }
    )
    pro = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": BASE,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
            "lookup_key": "pro_monthly",
        }
    )
    runs = client.v1.prices.create(
        params={
            "currency": "usd",
            "product_data": {"name": "Runs"},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": INCLUDED_RUNS, "unit_amount": 0},
                {"up_to": "inf", "unit_amount": RUN_PRICE},
            ],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return clock, customer, {"pro": pro.id, "runs": runs.id}


def _send_runs(client: stripe.StripeClient, customer: str, index: int) -> None:
    for n, value in enumerate(runs_in_period(index)):
        client.v1.billing.meter_events.create(
            params={
                "event_name": "runs",
                "identifier": f"runs-{index}-{n}",
                "payload": {"stripe_customer_id": customer, "runs": str(value)},
            }
        )


def test_a_year_of_pro_renewals_with_a_recovered_decline_and_a_final_unpaid(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    httpx.post(
        f"{sim.url}/_sim/billing", json={"subscription_status_after_final_attempt": "unpaid"}
    )
    clock, customer, prices = _setup(client)
    vat = client.v1.tax_rates.create(
        params={"display_name": "VAT", "percentage": 20, "inclusive": True}
    )
    welcome = client.v1.coupons.create(
        params={"amount_off": 900, "currency": "usd", "duration": "once", "name": "Welcome"}
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": prices["pro"], "quantity": 1}, {"price": prices["runs"]}],
            "default_tax_rates": [vat.id],
            "discounts": [{"coupon": welcome.id}],
            "metadata": {"plan": "pro"},
        }
    )
    assert sub.status == "active"
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (first.amount_paid, first.total_taxes[0].amount) == (2000, 333)  # 2000 x 20/120
    onboarding = client.v1.invoice_items.create(
        params={
            "customer": customer,
            "amount": 5000,
            "currency": "usd",
            "description": "Onboarding",
            "subscription": sub.id,
        }
    )

    for index in range(12):
        _send_runs(client, customer, index)
        renewal_at = month_start(index + 1)
        number = index + 1  # renewal number
        if number in (DECLINED_ONCE, DECLINED_FOR_GOOD):
            set_card(client, customer, "pm_card_chargeCustomerFail")
        advance(client, clock, renewal_at + 2 * HOUR)
        invoice = invoices_of(client, sub.id)[-1]
        assert invoice.billing_reason == "subscription_cycle"
        assert (invoice.period_start, invoice.period_end) == (month_start(index), renewal_at)
        lines = list(
            client.v1.invoices.line_items.list(invoice.id, params={"limit": 100}).auto_paging_iter()
        )
        by_price = {
            line.pricing.price_details.price: line for line in lines if line.pricing.price_details
        }
        assert by_price[prices["pro"]].amount == BASE
        assert by_price[prices["pro"]].period.start == renewal_at
        usage = by_price[prices["runs"]]
        assert usage.quantity == sum(runs_in_period(index))
        assert usage.amount == expected_overage(index)
        assert (usage.period.start, usage.period.end) == (month_start(index), renewal_at)
        extra = 5000 if number == 1 else 0  # the pending onboarding item rides on the first renewal
        assert invoice.total == BASE + expected_overage(index) + extra
        if number == DECLINED_ONCE:
            assert (invoice.status, invoice.attempt_count) == ("open", 1)
            assert invoice.next_payment_attempt == renewal_at + HOUR + 3 * DAY
            assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
            set_card(client, customer, "pm_card_visa")
            advance(client, clock, invoice.next_payment_attempt + HOUR)
            invoice = client.v1.invoices.retrieve(invoice.id)
            assert (invoice.status, invoice.attempt_count) == ("paid", 2)
            assert client.v1.subscriptions.retrieve(sub.id).status == "active"
        elif number == DECLINED_FOR_GOOD:
            first_attempt = renewal_at + HOUR
            advance(client, clock, first_attempt + 16 * DAY)
            invoice = client.v1.invoices.retrieve(invoice.id)
            assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
                "open",
                4,
                None,
            )
        else:
            assert (invoice.status, invoice.amount_paid, invoice.attempt_count) == (
                "paid",
                invoice.total,
                1,
            )

    final = client.v1.subscriptions.retrieve(sub.id)
    assert final.status == "unpaid"
    invoices = invoices_of(client, sub.id)
    assert len(invoices) == 13
    assert [i.status for i in invoices].count("paid") == 12
    assert client.v1.invoice_items.retrieve(onboarding.id).invoice == invoices[1].id

    # Shapes of everything the year touched.
    assert_stripe_shape(final, "subscription")
    assert_stripe_shape(final["items"].data[0], "subscription_item")
    assert_stripe_shape(invoices[-1], "invoice")
    assert_stripe_shape(client.v1.invoice_items.retrieve(onboarding.id), "invoiceitem")
    assert_stripe_shape(client.v1.coupons.retrieve(welcome.id), "coupon")
    assert_stripe_shape(client.v1.tax_rates.retrieve(vat.id), "tax_rate")
    assert_stripe_shape(
        client.v1.test_helpers.test_clocks.retrieve(clock), "test_helpers.test_clock"
    )

    # The event stream tells the same story, stamped with the clock's time.
    assert sim.webhooks.flush(timeout=20)
    events = [
        e
        for e in webhook_sink.events(webhook_sink.secret)
        if e.type.startswith(("invoice.", "customer.subscription."))
    ]
    counts = Counter(e.type for e in events)
    assert counts["invoice.created"] == 13
    assert counts["invoice.paid"] == 12
    assert counts["invoice.upcoming"] == 12
    assert counts["invoice.payment_failed"] == 1 + 4
    final_failures = [e.data.object for e in events if e.type == "invoice.payment_failed"][1:]
    assert [(f.attempt_count, f.next_payment_attempt is None) for f in final_failures] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    statuses = [
        (e.data.previous_attributes.status, e.data.object.status)
        for e in events
        if e.type == "customer.subscription.updated" and "status" in e.data.previous_attributes
    ]
    assert statuses == [
        ("incomplete", "active"),
        ("active", "past_due"),
        ("past_due", "active"),
        ("active", "past_due"),
        ("past_due", "unpaid"),
    ]
    times = [e.created for e in events]
    assert times == sorted(times)
