"""Test clocks through the official SDK: advancing time renews, retries and ends subscriptions."""

from __future__ import annotations

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.stripesim.conftest import WebhookSink, assert_stripe_shape
from tests.stripesim.test_subscriptions import (
    DAY,
    FEB_1,
    T0,
    advance,
    clock_customer,
    invoices_of,
    price,
    set_card,
)

HOUR = 3600


def test_clock_crud_and_events(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": T0, "name": "year"})
    assert_stripe_shape(clock, "test_helpers.test_clock")
    assert (clock.status, clock.frozen_time, clock.name) == ("ready", T0, "year")
    assert clock.deletes_after == clock.created + 30 * DAY
    moving = client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": T0 + DAY})
    assert moving.status == "advancing"
    ready = client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert (ready.status, ready.frozen_time) == ("ready", T0 + DAY)
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    assert client.v1.test_helpers.test_clocks.delete(clock.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.retrieve(clock.id)
    sim.webhooks.flush(timeout=10)
    assert [t for t in webhook_sink.types(webhook_sink.secret) if t.startswith("test_helpers")] == [
        "test_helpers.test_clock.created",
        "test_helpers.test_clock.advancing",
        "test_helpers.test_clock.ready",
        "test_helpers.test_clock.deleted",
    ]


def test_customer_created_on_a_clock_lives_at_its_time(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    assert client.v1.customers.retrieve(customer).created == T0
    assert client.v1.customers.retrieve(customer).test_clock == clock


def test_advance_must_move_forward_and_within_two_intervals(client: stripe.StripeClient) -> None:
    clock, customer = clock_customer(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        advance(client, clock, T0)
    assert raised.value.param == "frozen_time"
    with pytest.raises(stripe.InvalidRequestError):
        advance(client, clock, T0 + 3 * 365 * DAY)  # no subscription: two years at most
    client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    with pytest.raises(stripe.InvalidRequestError):
        advance(client, clock, T0 + 70 * DAY)  # monthly subscription: two months at most
    advance(client, clock, T0 + 60 * DAY)


def test_deleting_a_clock_deletes_its_customers_and_cancels_subscriptions(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    client.v1.test_helpers.test_clocks.delete(clock)
    assert client.v1.customers.retrieve(customer).deleted is True
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


def test_renewal_sends_upcoming_then_invoices_and_charges_an_hour_later(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    advance(client, clock, FEB_1 + 30 * 60)
    draft = invoices_of(client, sub.id)[-1]
    assert (draft.status, draft.billing_reason, draft.automatically_finalizes_at) == (
        "draft",
        "subscription_cycle",
        FEB_1 + HOUR,
    )
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert (renewed["items"].data[0].current_period_start, renewed.latest_invoice) == (
        FEB_1,
        draft.id,
    )
    advance(client, clock, FEB_1 + 2 * HOUR)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid, paid.status_transitions.paid_at) == (
        "paid",
        2900,
        FEB_1 + HOUR,
    )
    sim.webhooks.flush(timeout=10)
    events = [e for e in webhook_sink.events(webhook_sink.secret) if e.created > T0]
    assert [
        (e.type, e.created)
        for e in events
        if e.type.startswith(("invoice.", "customer.subscription."))
    ] == [
        ("invoice.upcoming", FEB_1 - 7 * DAY),
        ("invoice.created", FEB_1),
        ("customer.subscription.updated", FEB_1),
        ("invoice.finalized", FEB_1 + HOUR),
        ("invoice.paid", FEB_1 + HOUR),
        ("invoice.payment_succeeded", FEB_1 + HOUR),
    ]
    upcoming = next(e for e in events if e.type == "invoice.upcoming")
    assert upcoming.data.object.amount_due == 2900


def test_objects_without_a_clock_follow_the_simulator_clock(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    customer = client.v1.customers.create()
    set_card(client, customer.id, "pm_card_visa")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price(client)}]}
    )
    end = sub["items"].data[0].current_period_end
    sim.sim.advance(end - sim.sim.wall_time() + 2 * HOUR)
    invoices = invoices_of(client, sub.id)
    assert [i.status for i in invoices] == ["paid", "paid"]
    assert invoices[-1].created == end


def test_failed_renewal_retries_on_schedule_then_cancels_by_default(
    client: stripe.StripeClient, sim: RunningSim, webhook_sink: WebhookSink
) -> None:
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    set_card(client, customer, "pm_card_chargeCustomerFail")
    advance(client, clock, FEB_1 + 2 * HOUR)
    invoice = invoices_of(client, sub.id)[-1]
    first = FEB_1 + HOUR
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (1, first + 3 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    advance(client, clock, first + 3 * DAY + HOUR)
    assert client.v1.invoices.retrieve(invoice.id).next_payment_attempt == first + 8 * DAY
    advance(client, clock, first + 16 * DAY)
    final = client.v1.invoices.retrieve(invoice.id)
    assert (final.attempt_count, final.next_payment_attempt, final.status) == (4, None, "open")
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert (ended.status, ended.ended_at) == ("canceled", first + 15 * DAY)
    assert ended.cancellation_details.reason == "payment_failed"
    sim.webhooks.flush(timeout=10)
    failures = [
        e for e in webhook_sink.events(webhook_sink.secret) if e.type == "invoice.payment_failed"
    ]
    assert [
        (e.data.object.attempt_count, e.data.object.next_payment_attempt) for e in failures
    ] == [
        (1, first + 3 * DAY),
        (2, first + 8 * DAY),
        (3, first + 15 * DAY),
        (4, None),
    ]


def test_billing_settings_route_and_retry_open_invoices_recovers(
    client: stripe.StripeClient, sim: RunningSim
) -> None:
    answer = httpx.post(
        f"{sim.url}/_sim/billing",
        json={"subscription_status_after_final_attempt": "past_due", "retry_days": [1, 1]},
    )
    assert answer.json()["billing"]["retry_days"] == [1, 1]
    clock, customer = clock_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price(client)}]}
    )
    set_card(client, customer, "pm_card_chargeCustomerFail")
    advance(client, clock, FEB_1 + 3 * DAY)
    invoice = invoices_of(client, sub.id)[-1]
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (3, None)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    set_card(client, customer, "pm_card_visa")
    from stripesim.billing import engine_ctx, retry_open_invoices

    with sim.sim.lock:
        retry_open_invoices(engine_ctx(sim.sim, sim.sim.platform), customer)
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
