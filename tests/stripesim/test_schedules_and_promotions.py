"""Subscription schedules (phases that move a subscription to new prices) and promotion codes."""

from __future__ import annotations

import pytest
import stripe

from tests.stripesim.test_subscriptions import (
    DAY,
    FEB_1,
    MAR_1,
    T0,
    advance,
    clock_customer,
    invoices_of,
    price,
    set_card,
)


def _two_phases(client: stripe.StripeClient, old: str, new: str, customer: str, **extra):  # type: ignore[no-untyped-def]
    return client.v1.subscription_schedules.create(
        params={
            "customer": customer,
            "start_date": "now",
            "phases": [
                {"items": [{"price": old}], "duration": {"interval": "month"}},
                {"items": [{"price": new}], "duration": {"interval": "month"}},
            ],
            **extra,
        }
    )


def test_a_schedule_migrates_the_price_at_the_renewal(client: stripe.StripeClient) -> None:
    old, new = price(client, 2900), price(client, 3900, name="Pro 2026")
    clock, customer = clock_customer(client)
    schedule = _two_phases(client, old, new, customer)
    assert schedule.status == "active"
    assert [p.start_date for p in schedule.phases] == [T0, FEB_1]
    assert schedule.current_phase.to_dict() == {"start_date": T0, "end_date": FEB_1}
    sub = client.v1.subscriptions.retrieve(str(schedule.subscription))
    assert sub.schedule == schedule.id
    advance(client, clock, FEB_1 + 2 * 3600)
    renewal = invoices_of(client, sub.id)[-1]
    assert renewal.billing_reason == "subscription_cycle"
    assert [line.pricing.price_details.price for line in renewal.lines.data] == [new]
    assert renewal.amount_paid == 3900  # no proration: the phase changed at the renewal
    moved = client.v1.subscriptions.retrieve(sub.id)
    assert [item.price.id for item in moved["items"].data] == [new]
    advance(client, clock, MAR_1 + 3600)
    done = client.v1.subscription_schedules.retrieve(schedule.id)
    assert (done.status, done.completed_at) == ("completed", MAR_1)
    kept = client.v1.subscriptions.retrieve(sub.id)
    assert (kept.status, kept.schedule) == ("active", None)  # end_behavior=release


def test_a_schedule_ending_with_cancel_cancels_the_subscription(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    schedule = client.v1.subscription_schedules.create(
        params={
            "customer": customer,
            "end_behavior": "cancel",
            "phases": [{"items": [{"price": price(client)}], "end_date": T0 + 10 * DAY}],
        }
    )
    advance(client, clock, T0 + 11 * DAY)
    sub = client.v1.subscriptions.retrieve(str(schedule.subscription))
    assert (sub.status, sub.ended_at) == ("canceled", T0 + 10 * DAY)


def test_a_schedule_can_start_later_and_be_released_or_canceled(
    client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(client)
    later = client.v1.subscription_schedules.create(
        params={
            "customer": customer,
            "start_date": T0 + 3 * DAY,
            "phases": [{"items": [{"price": price(client), "quantity": 2}]}],
        }
    )
    assert (later.status, later.subscription) == ("not_started", None)
    advance(client, clock, T0 + 4 * DAY)
    started = client.v1.subscription_schedules.retrieve(later.id)
    assert started.status == "active"
    sub = client.v1.subscriptions.retrieve(str(started.subscription))
    assert sub.start_date == T0 + 3 * DAY and sub["items"].data[0].quantity == 2
    released = client.v1.subscription_schedules.release(later.id)
    assert (released.status, released.released_subscription) == ("released", sub.id)
    assert client.v1.subscriptions.retrieve(sub.id).schedule is None
    wrapped = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    assert wrapped.phases[0].items[0].price == sub["items"].data[0].price.id
    canceled = client.v1.subscription_schedules.cancel(wrapped.id)
    assert canceled.status == "canceled"
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


# -- promotion codes ------------------------------------------------------------------------------


def _promo(client: stripe.StripeClient, **extra):  # type: ignore[no-untyped-def]
    coupon = client.v1.coupons.create(params={"percent_off": 50, "duration": "once"})
    return client.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": coupon.id}, **extra}
    )


def test_a_promotion_code_discounts_a_subscription_and_counts_redemptions(
    client: stripe.StripeClient,
) -> None:
    promo = _promo(client, code="HALF", max_redemptions=1)
    customer = client.v1.customers.create().id
    set_card(client, customer, "pm_card_visa")
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price(client, 2000)}],
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.amount_paid == 1000
    assert client.v1.promotion_codes.retrieve(promo.id).times_redeemed == 1
    assert client.v1.promotion_codes.list(params={"code": "HALF"}).data[0].id == promo.id
    other = client.v1.customers.create().id
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.create(
            params={
                "customer": other,
                "items": [{"price": price(client, 2000)}],
                "discounts": [{"promotion_code": promo.id}],
            }
        )
    assert raised.value.param == "discounts[0][promotion_code]"


def test_promotion_codes_list_by_coupon_customer_and_active(client: stripe.StripeClient) -> None:
    first = _promo(client)
    customer = client.v1.customers.create().id
    second = _promo(client, customer=customer)
    client.v1.promotion_codes.update(second.id, params={"active": False})
    coupon = first.promotion.coupon

    def listed(**params: object) -> list[str]:
        return [p.id for p in client.v1.promotion_codes.list(params=params).data]  # type: ignore[arg-type]

    assert listed(coupon=coupon) == [first.id]
    assert listed(customer=customer) == [second.id]
    assert listed(active=False) == [second.id]
    assert listed(active=True, coupon=coupon) == [first.id]
    assert listed(coupon=coupon, customer=customer) == []


def test_a_promotion_code_keeps_its_restrictions(client: stripe.StripeClient) -> None:
    reserved = client.v1.customers.create().id
    promo = _promo(client, customer=reserved)
    stranger = client.v1.customers.create().id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create(
            params={
                "customer": stranger,
                "items": [{"price": price(client)}],
                "discounts": [{"promotion_code": promo.id}],
            }
        )
    client.v1.promotion_codes.update(promo.id, params={"active": False})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": reserved,
                "line_items": [{"price": price(client), "quantity": 1}],
                "success_url": "https://example.com/ok",
                "discounts": [{"promotion_code": promo.id}],
            }
        )


def test_checkout_applies_a_promotion_code(client: stripe.StripeClient) -> None:
    promo = _promo(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price(client, 3000), "quantity": 1}],
            "success_url": "https://example.com/ok",
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    assert session.amount_total == 1500
    assert session.discounts[0].promotion_code == promo.id
