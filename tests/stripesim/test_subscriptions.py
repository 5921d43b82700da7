"""Subscriptions through the official SDK: creation, trials, prorations, cancel, pause, items."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape

T0 = 1767225600  # 2026-01-01T00:00:00Z
DAY = 86400
FEB_1 = 1769904000  # 2026-02-01T00:00:00Z
MAR_1 = 1772323200  # 2026-03-01T00:00:00Z


# -- helpers shared by the billing test modules ---------------------------------------------------


def clock_customer(
    client: stripe.StripeClient,
    *,
    frozen: int = T0,
    card: str | None = "pm_card_visa",
    **fields: Any,
) -> tuple[str, str]:
    """A test clock at `frozen` and a customer on it, paying with `card` by default."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen})
    customer = client.v1.customers.create(params={"test_clock": clock.id, **fields})
    if card:
        set_card(client, customer.id, card)
    return clock.id, customer.id


def set_card(client: stripe.StripeClient, customer_id: str, card: str) -> str:
    """Attach a test card and make it the customer's default for invoices."""
    pm = client.v1.payment_methods.attach(card, params={"customer": customer_id})
    client.v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return pm.id


def price(
    client: stripe.StripeClient,
    amount: int = 2900,
    *,
    currency: str = "usd",
    name: str = "Pro",
    interval: str = "month",
    **extra: Any,
) -> str:
    return client.v1.prices.create(
        params={
            "currency": currency,
            "unit_amount": amount,
            "recurring": {"interval": interval},
            "product_data": {"name": name},
            **extra,
        }
    ).id


def advance(client: stripe.StripeClient, clock_id: str, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": to})


def invoices_of(client: stripe.StripeClient, subscription_id: str) -> list[Any]:
    """The subscription's invoices, oldest first."""
    listed = client.v1.invoices.list(params={"subscription": subscription_id, "limit": 100})
    return list(reversed(listed.data))


def sub_events(
    sink: Any, prefix: tuple[str, ...] = ("customer.subscription.", "invoice.")
) -> list[str]:
    return [t for t in sink.types(sink.secret) if t.startswith(prefix)]


# -- creation -------------------------------------------------------------------------------------


def test_subscription_is_active_with_a_paid_first_invoice(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    pro, seats = price(client, 2900), price(client, 500, name="Seat")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": pro}, {"price": seats, "quantity": 3}],
            "metadata": {"org": "o1"},
            "expand": ["latest_invoice"],
        }
    )
    assert sub.status == "active"
    assert sub.test_clock == clock
    assert sub.start_date == T0
    assert sub.metadata["org"] == "o1"
    assert [item.quantity for item in sub["items"].data] == [1, 3]
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (T0, FEB_1)
    assert sub.billing_cycle_anchor == T0
    invoice = sub.latest_invoice
    assert invoice.status == "paid"
    assert invoice.billing_reason == "subscription_create"
    assert (invoice.subtotal, invoice.total, invoice.amount_due, invoice.amount_paid) == (
        4400,
        4400,
        4400,
        4400,
    )
    assert invoice.amount_remaining == 0
    assert invoice.number.endswith("-0001")
    assert invoice.hosted_invoice_url.startswith(sim.url)
    assert [line.amount for line in invoice.lines.data] == [2900, 1500]
    assert invoice.lines.data[1].description == "3 \N{MULTIPLICATION SIGN} Seat (at $5.00 / month)"
    assert_stripe_shape(sub, "subscription")
    assert_stripe_shape(item, "subscription_item")
    assert_stripe_shape(invoice, "invoice")
    assert_stripe_shape(invoice.lines.data[0], "line_item")
    sim.webhooks.flush(timeout=10)
    assert sub_events(webhook_sink) == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    events = webhook_sink.events(webhook_sink.secret)
    created = next(e for e in events if e.type == "customer.subscription.created")
    updated = next(e for e in events if e.type == "customer.subscription.updated")
    assert created.data.object.status == "incomplete"
    assert updated.data.previous_attributes.status == "incomplete"
    assert updated.data.object.status == "active"
    assert all(e.created == T0 for e in events if e.type.startswith("invoice."))


def test_declined_first_payment_leaves_the_subscription_incomplete_then_expired(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client, card="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
        "open",
        1,
        None,
    )
    advance(client, clock, T0 + 23 * 3600 + 1)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "incomplete_expired"
    assert client.v1.invoices.retrieve(invoice.id).status == "void"


def test_paying_an_incomplete_subscriptions_invoice_activates_it(
    client: stripe.StripeClient,
) -> None:
    _, customer = clock_customer(client, card="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    set_card(client, customer, "pm_card_visa")
    paid = client.v1.invoices.pay(sub.latest_invoice)
    assert paid.status == "paid"
    assert paid.attempt_count == 2
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_error_if_incomplete_answers_402_and_creates_nothing(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client, card="pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError) as raised:
        client.v1.subscriptions.create(
            params={
                "customer": customer,
                "items": [{"price": price(client)}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert raised.value.http_status == 402
    assert client.v1.subscriptions.list(params={"customer": customer, "status": "all"}).data == []
    assert client.v1.invoices.list(params={"customer": customer}).data == []


def test_default_incomplete_finalizes_without_charging(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.attempt_count) == ("open", 0)
    client.v1.invoices.pay(invoice.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_unknown_price_is_resource_missing_with_its_param(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.create(
            params={"customer": customer, "items": [{"price": "price_nope"}]}
        )
    assert raised.value.code == "resource_missing"
    assert raised.value.param == "items[0][price]"


def test_zero_decimal_currency_subscription_stays_whole(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    yen = price(client, 1000, currency="jpy", name="Pro JP")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": yen, "quantity": 3}],
            "expand": ["latest_invoice"],
        }
    )
    assert sub.currency == "jpy"
    assert sub.latest_invoice.amount_paid == 3000
    assert (
        sub.latest_invoice.lines.data[0].description
        == "3 \N{MULTIPLICATION SIGN} Pro JP (at ¥1,000 / month)"
    )
    # A mid-period change prorates in whole yen.
    advance(client, clock, T0 + 10 * DAY)
    client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "quantity": 4}],
            "proration_behavior": "always_invoice",
        },
    )
    invoice = invoices_of(client, sub.id)[-1]
    # 1000 yen for the 21 of 31 days left.
    assert [line.amount for line in invoice.lines.data] == [-2032, 2710]
    assert invoice.amount_paid == 678


# -- prorations -----------------------------------------------------------------------------------

JAN_16 = T0 + 15 * DAY  # 16 of January's 31 days left


def _upgrade_setup(client: stripe.StripeClient) -> tuple[str, str, Any, str]:
    clock, customer = clock_customer(client)
    pro, business = price(client, 2900, name="Pro"), price(client, 9900, name="Business")
    sub = client.v1.subscriptions.create(params={"customer": customer, "items": [{"price": pro}]})
    advance(client, clock, JAN_16)
    return clock, customer, sub, business


def test_create_prorations_adds_pending_items_billed_at_renewal(
    client: stripe.StripeClient, webhook_sink: WebhookSink, sim: RunningSim
) -> None:
    clock, customer, sub, business = _upgrade_setup(client)
    updated = client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": sub["items"].data[0].id, "price": business}]}
    )
    assert updated["items"].data[0].price.id == business
    assert updated.latest_invoice == sub.latest_invoice  # nothing billed yet
    pending = client.v1.invoice_items.list(params={"customer": customer, "pending": True}).data
    by_amount = sorted((item.amount, item.description) for item in pending)
    assert by_amount == [
        (-1497, "Unused time on Pro after 16 Jan 2026"),  # 2900 x 16/31
        (5110, "Remaining time on Business after 16 Jan 2026"),  # 9900 x 16/31
    ]
    assert all(
        item.proration and item.period.start == JAN_16 and item.period.end == FEB_1
        for item in pending
    )
    assert_stripe_shape(pending[0], "invoiceitem")
    advance(client, clock, FEB_1 + 2 * 3600)
    renewal = invoices_of(client, sub.id)[-1]
    assert renewal.billing_reason == "subscription_cycle"
    assert sorted(line.amount for line in renewal.lines.data) == [-1497, 5110, 9900]
    assert (renewal.total, renewal.amount_paid, renewal.status) == (13513, 13513, "paid")
    assert client.v1.invoice_items.list(params={"customer": customer, "pending": True}).data == []
    sim.webhooks.flush(timeout=10)
    update = next(
        e
        for e in webhook_sink.events(webhook_sink.secret)
        if e.type == "customer.subscription.updated" and "items" in e.data.previous_attributes
    )
    assert update.data.previous_attributes["items"].data[0].price.id != business


def test_proration_behavior_none_changes_price_without_credit(client: stripe.StripeClient) -> None:
    clock, customer, sub, business = _upgrade_setup(client)
    client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "price": business}],
            "proration_behavior": "none",
        },
    )
    assert client.v1.invoice_items.list(params={"customer": customer}).data == []
    advance(client, clock, FEB_1 + 2 * 3600)
    assert invoices_of(client, sub.id)[-1].amount_paid == 9900


def test_always_invoice_bills_the_proration_now(client: stripe.StripeClient) -> None:
    _, _, sub, business = _upgrade_setup(client)
    client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "price": business}],
            "proration_behavior": "always_invoice",
        },
    )
    invoice = invoices_of(client, sub.id)[-1]
    assert invoice.billing_reason == "subscription_update"
    assert [line.amount for line in invoice.lines.data] == [-1497, 5110]
    assert all(line.parent.subscription_item_details.proration for line in invoice.lines.data)
    assert (invoice.status, invoice.amount_paid, invoice.created) == ("paid", 3613, JAN_16)
    assert client.v1.subscriptions.retrieve(sub.id).latest_invoice == invoice.id


def test_quantity_change_prorates_old_and_new_quantity(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    seat = price(client, 1000, name="Seat")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": seat, "quantity": 2}]}
    )
    advance(client, clock, JAN_16)
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": sub["items"].data[0].id, "quantity": 5}]}
    )
    pending = client.v1.invoice_items.list(params={"customer": customer, "pending": True}).data
    assert sorted((i.amount, i.description) for i in pending) == [
        (-1032, "Unused time on 2 \N{MULTIPLICATION SIGN} Seat after 16 Jan 2026"),
        (2581, "Remaining time on 5 \N{MULTIPLICATION SIGN} Seat after 16 Jan 2026"),
    ]


def test_preview_with_proration_date_matches_the_update(client: stripe.StripeClient) -> None:
    _, _, sub, business = _upgrade_setup(client)
    item_id = sub["items"].data[0].id
    preview = client.v1.invoices.create_preview(
        params={
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": item_id, "price": business}],
                "proration_date": JAN_16,
            },
        }
    )
    prorations = [
        line.amount
        for line in preview.lines.data
        if line.parent.subscription_item_details.proration
    ]
    assert prorations == [-1497, 5110]
    assert preview.amount_due == 13513
    assert_stripe_shape(preview, "invoice")
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item_id, "price": business}], "proration_date": JAN_16}
    )
    upcoming = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert upcoming.amount_due == 13513


def test_subscription_items_routes_add_update_and_remove_with_prorations(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    pro, addon = price(client, 2900), price(client, 600, name="Addon")
    sub = client.v1.subscriptions.create(params={"customer": customer, "items": [{"price": pro}]})
    advance(client, clock, JAN_16)
    item = client.v1.subscription_items.create(
        params={"subscription": sub.id, "price": addon, "quantity": 2}
    )
    assert_stripe_shape(item, "subscription_item")
    assert item.current_period_end == FEB_1
    assert client.v1.subscription_items.retrieve(item.id).quantity == 2
    updated = client.v1.subscription_items.update(
        item.id, params={"quantity": 1, "proration_behavior": "none"}
    )
    assert updated.quantity == 1
    listed = client.v1.subscription_items.list(params={"subscription": sub.id})
    assert {i.id for i in listed.data} == {item.id, sub["items"].data[0].id}
    deleted = client.v1.subscription_items.delete(item.id)
    assert deleted.deleted is True
    pending = client.v1.invoice_items.list(params={"customer": customer, "pending": True}).data
    assert sorted(i.amount for i in pending) == [
        -310,
        619,
    ]  # 1200 x 16/31 added, 600 x 16/31 removed
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_items.delete(sub["items"].data[0].id)


# -- trials ---------------------------------------------------------------------------------------


def test_trial_with_a_card_converts_and_charges_an_hour_after_trial_end(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "trial_period_days": 14,
            "expand": ["latest_invoice"],
        }
    )
    trial_end = T0 + 14 * DAY
    assert (sub.status, sub.trial_start, sub.trial_end) == ("trialing", T0, trial_end)
    assert sub.latest_invoice.amount_due == 0
    assert sub.latest_invoice.status == "paid"
    assert sub.latest_invoice.lines.data[0].description == "Trial period for Pro"
    advance(client, clock, trial_end + 2 * 3600)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    assert sub["items"].data[0].current_period_start == trial_end
    assert sub.billing_cycle_anchor == trial_end
    invoice = invoices_of(client, sub.id)[-1]
    assert (invoice.amount_paid, invoice.status) == (2900, "paid")
    assert invoice.status_transitions.finalized_at == trial_end + 3600
    sim.webhooks.flush(timeout=10)
    events = [
        e
        for e in webhook_sink.events(webhook_sink.secret)
        if e.type.startswith("customer.subscription")
    ]
    will_end = next(e for e in events if e.type == "customer.subscription.trial_will_end")
    assert will_end.created == trial_end - 3 * DAY
    ended = [
        e for e in events if e.type == "customer.subscription.updated" and e.created == trial_end
    ]
    assert ended[0].data.previous_attributes.status == "trialing"


@pytest.mark.parametrize(
    ("behavior", "status", "event"),
    [
        ("cancel", "canceled", "customer.subscription.deleted"),
        ("pause", "paused", "customer.subscription.paused"),
    ],
)
def test_trial_without_payment_method_ends_per_trial_settings(
    client: stripe.StripeClient,
    sim: RunningSim,
    webhook_sink: WebhookSink,
    behavior: str,
    status: str,
    event: str,
) -> None:
    clock, customer = clock_customer(client, card=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": behavior}},
        }
    )
    advance(client, clock, T0 + 8 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == status
    assert len(invoices_of(client, sub.id)) == 1  # only the trial's $0 invoice
    sim.webhooks.flush(timeout=10)
    assert event in webhook_sink.types(webhook_sink.secret)
    if behavior == "pause":
        set_card(client, customer, "pm_card_visa")
        resumed = client.v1.subscriptions.resume(
            sub.id, params={"billing_cycle_anchor": {"type": "now"}}
        )
        assert resumed.status == "active"
        assert invoices_of(client, sub.id)[-1].amount_paid == 2900
        sim.webhooks.flush(timeout=10)
        assert "customer.subscription.resumed" in webhook_sink.types(webhook_sink.secret)


def test_trial_without_payment_method_and_create_invoice_goes_past_due(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client, card=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "trial_end": T0 + 5 * DAY,
        }
    )
    advance(client, clock, T0 + 5 * DAY + 2 * 3600)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    invoice = invoices_of(client, sub.id)[-1]
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    assert invoice.next_payment_attempt == T0 + 5 * DAY + 3600 + 3 * DAY


def test_ending_a_trial_now_invoices_immediately(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}], "trial_period_days": 30}
    )
    advance(client, clock, T0 + 2 * DAY)
    sub = client.v1.subscriptions.update(sub.id, params={"trial_end": "now"})
    assert (sub.status, sub.trial_end) == ("active", T0 + 2 * DAY)
    assert invoices_of(client, sub.id)[-1].amount_paid == 2900


# -- cancel, resume, pause ------------------------------------------------------------------------


def test_cancel_at_period_end_can_be_undone_and_then_ends_the_subscription(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    canceling = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert (canceling.cancel_at_period_end, canceling.cancel_at, canceling.canceled_at) == (
        True,
        FEB_1,
        T0,
    )
    assert canceling.cancellation_details.reason == "cancellation_requested"
    resumed = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert (resumed.cancel_at_period_end, resumed.cancel_at, resumed.canceled_at) == (
        False,
        None,
        None,
    )
    client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    advance(client, clock, FEB_1 + 2 * 3600)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert (ended.status, ended.ended_at) == ("canceled", FEB_1)
    assert len(invoices_of(client, sub.id)) == 1
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert types[-1] == "customer.subscription.deleted" or "customer.subscription.deleted" in types
    assert client.v1.subscriptions.list(params={"customer": customer}).data == []
    assert [
        s.id
        for s in client.v1.subscriptions.list(params={"customer": customer, "status": "ended"}).data
    ] == [sub.id]


def test_cancel_now_with_prorate_and_invoice_now_credits_the_customer(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    advance(client, clock, JAN_16)
    canceled = client.v1.subscriptions.cancel(sub.id, params={"prorate": True, "invoice_now": True})
    assert (canceled.status, canceled.canceled_at, canceled.ended_at) == (
        "canceled",
        JAN_16,
        JAN_16,
    )
    final = invoices_of(client, sub.id)[-1]
    assert final.total == -1497
    assert final.amount_due == 0
    assert final.ending_balance == -1497
    assert client.v1.customers.retrieve(customer).balance == -1497
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub.id, params={"items": [{"price": price(client)}]})


def test_pause_collection_voids_renewal_invoices_until_cleared(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    paused = client.v1.subscriptions.update(
        sub.id, params={"pause_collection": {"behavior": "void"}}
    )
    assert paused.pause_collection.behavior == "void"
    advance(client, clock, FEB_1 + 2 * 3600)
    assert invoices_of(client, sub.id)[-1].status == "void"
    client.v1.subscriptions.update(sub.id, params={"pause_collection": ""})
    advance(client, clock, MAR_1 + 2 * 3600)
    assert invoices_of(client, sub.id)[-1].status == "paid"


def test_list_filters_and_search(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    pro, team = price(client, 2900), price(client, 4900, name="Team")
    first = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": pro}], "metadata": {"org": "a"}}
    )
    second = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": team}], "trial_period_days": 3}
    )
    assert [s.id for s in client.v1.subscriptions.list(params={"price": team}).data] == [second.id]
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "trialing"}).data] == [
        second.id
    ]
    assert [s.id for s in client.v1.subscriptions.list(params={"test_clock": clock}).data] == [
        second.id,
        first.id,
    ]
    found = client.v1.subscriptions.search(params={"query": "metadata['org']:'a'"})
    assert [s.id for s in found.data] == [first.id]


def test_connected_account_subscription_takes_an_application_fee(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    account = client.v1.accounts.create(params={"type": "express"})
    options = {"stripe_account": account.id}
    customer = client.v1.customers.create(options=options)
    pm = client.v1.payment_methods.attach(
        "pm_card_visa", params={"customer": customer.id}, options=options
    )
    connected_price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 10000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        },
        options=options,
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": connected_price.id}],
            "default_payment_method": pm.id,
            "application_fee_percent": 10,
        },
        options=options,
    )
    assert sub.application_fee_percent == 10
    intents = client.v1.payment_intents.list(params={"customer": customer.id}, options=options).data
    assert intents[0].application_fee_amount == 1000


# -- anchors, payment behaviours on update, authentication ----------------------------------------


def test_future_billing_cycle_anchor_prorates_the_first_invoice(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    anchor = T0 + 14 * DAY  # 15 January
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}],
            "billing_cycle_anchor": anchor,
            "expand": ["latest_invoice"],
        }
    )
    assert sub.billing_cycle_anchor == anchor
    assert sub["items"].data[0].current_period_end == anchor
    # 14 of the 31 days from 15 December to 15 January.
    assert sub.latest_invoice.amount_paid == 1310
    advance(client, clock, anchor + 2 * 3600)
    renewal = invoices_of(client, sub.id)[-1]
    assert (renewal.amount_paid, renewal.lines.data[0].period.end) == (2900, anchor + 31 * DAY)


def test_switching_to_a_yearly_price_starts_a_new_period_now(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    monthly, seat = price(client, 2900), price(client, 1000, name="Seat")
    yearly = price(client, 29000, interval="year", name="Pro yearly")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": monthly}, {"price": seat}]}
    )
    advance(client, clock, JAN_16)
    items = sub["items"].data
    client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [
                {"id": items[0].id, "price": yearly},
                {"id": items[1].id, "deleted": True},
                {"price": price(client, 10000, interval="year", name="Seat yearly")},
            ]
        },
    )
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert renewed.billing_cycle_anchor == JAN_16
    assert renewed["items"].data[0].current_period_end == JAN_16 + 365 * DAY
    invoice = invoices_of(client, sub.id)[-1]
    assert invoice.billing_reason == "subscription_update"
    # Credits for both monthly items (2900 and 1000 for 16/31), then the full year of each.
    assert sorted(line.amount for line in invoice.lines.data) == [-1497, -516, 10000, 29000]
    assert invoice.amount_paid == 36987


def test_billing_cycle_anchor_now_credits_every_item(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    advance(client, clock, JAN_16)
    client.v1.subscriptions.update(sub.id, params={"billing_cycle_anchor": {"type": "now"}})
    invoice = invoices_of(client, sub.id)[-1]
    assert sorted(line.amount for line in invoice.lines.data) == [-1497, 2900]
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end == (
        JAN_16 + 31 * DAY
    )


def test_card_requiring_authentication_leaves_the_subscription_incomplete(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, customer = clock_customer(client, card="pm_card_authenticationRequired")
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    assert sub.status == "incomplete"
    sim.webhooks.flush(timeout=10)
    assert "invoice.payment_action_required" in webhook_sink.types(webhook_sink.secret)


def test_pending_if_incomplete_applies_the_change_only_once_paid(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    _, customer, sub, business = _upgrade_setup(client)
    set_card(client, customer, "pm_card_chargeCustomerFail")
    item_id = sub["items"].data[0].id
    waiting = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item_id, "price": business}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
    )
    assert waiting.status == "active"
    assert waiting["items"].data[0].price.id != business
    assert waiting.pending_update.subscription_items[0].price.id == business
    set_card(client, customer, "pm_card_visa")
    client.v1.invoices.pay(waiting.latest_invoice)
    applied = client.v1.subscriptions.retrieve(sub.id)
    assert (applied["items"].data[0].price.id, applied.pending_update) == (business, None)
    sim.webhooks.flush(timeout=10)
    assert "customer.subscription.pending_update_applied" in webhook_sink.types(webhook_sink.secret)


def test_error_if_incomplete_update_is_refused_and_changes_nothing(
    client: stripe.StripeClient,
) -> None:
    _, customer, sub, business = _upgrade_setup(client)
    set_card(client, customer, "pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.update(
            sub.id,
            params={
                "items": [{"id": sub["items"].data[0].id, "price": business}],
                "proration_behavior": "always_invoice",
                "payment_behavior": "error_if_incomplete",
            },
        )
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after["items"].data[0].price.id) == (
        "active",
        sub["items"].data[0].price.id,
    )
    assert after.latest_invoice == sub.latest_invoice


def test_cancel_at_period_end_bills_the_last_periods_usage(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Runs",
            "event_name": "runs",
            "default_aggregation": {"formula": "count"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        }
    )
    runs = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 10,
            "product_data": {"name": "Runs"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    ).id
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client)}, {"price": runs}],
            "cancel_at_period_end": True,
        }
    )
    for _ in range(3):
        client.v1.billing.meter_events.create(
            params={"event_name": "runs", "payload": {"stripe_customer_id": customer}}
        )
    advance(client, clock, FEB_1 + 2 * 3600)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    final = invoices_of(client, sub.id)[-1]
    assert [(line.quantity, line.amount) for line in final.lines.data] == [(3, 30)]
    assert (final.status, final.amount_paid) == ("paid", 30)


def test_pause_and_resume_endpoints(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    assert client.v1.subscriptions.pause(sub.id).status == "paused"
    advance(client, clock, FEB_1 + 2 * 3600)
    assert len(invoices_of(client, sub.id)) == 1  # nothing billed while paused
    resumed = client.v1.subscriptions.resume(sub.id)
    assert (resumed.status, resumed.billing_cycle_anchor) == ("active", FEB_1 + 2 * 3600)
    assert invoices_of(client, sub.id)[-1].amount_paid == 2900
    sim.webhooks.flush(timeout=10)
    types = webhook_sink.types(webhook_sink.secret)
    assert "customer.subscription.paused" in types and "customer.subscription.resumed" in types


def test_inline_price_data_creates_the_items_price(client: stripe.StripeClient) -> None:
    _, customer = clock_customer(client)
    product = client.v1.products.create(params={"name": "Inline"})
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "product": product.id,
                        "unit_amount": 1234,
                        "recurring": {"interval": "month"},
                    }
                }
            ],
            "expand": ["latest_invoice"],
        }
    )
    assert sub["items"].data[0].price.product == product.id
    assert sub.latest_invoice.amount_paid == 1234
