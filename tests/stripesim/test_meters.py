"""Billing meters, meter events (identifier dedupe, time window), adjustments and summaries."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe

from stripesim.metering import usage_total
from tests.stripesim.conftest import assert_stripe_shape

DAY = 86400


def _meter(client: stripe.StripeClient, formula: str = "sum", **params) -> stripe.billing.Meter:  # type: ignore[no-untyped-def]
    return client.v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": params.pop("event_name", "api_call"),
            "default_aggregation": {"formula": formula},
            **params,
        }
    )


def _usage(
    client: stripe.StripeClient, customer: str, value: str, options=None, **params
) -> stripe.billing.MeterEvent:  # type: ignore[no-untyped-def]
    return client.v1.billing.meter_events.create(
        params={
            "event_name": params.pop("event_name", "api_call"),
            "payload": {"stripe_customer_id": customer, "value": value},
            **params,
        },
        options=options or {},
    )


def _now(sim) -> int:  # type: ignore[no-untyped-def]
    return int(sim.sim.wall_time())


def test_meter_has_stripes_shape_and_defaults(client: stripe.StripeClient) -> None:
    meter = _meter(client)
    assert_stripe_shape(meter, "billing.meter")
    assert meter.id.startswith("mtr_")
    assert meter.livemode is False and meter.status == "active"
    assert meter.customer_mapping.to_dict() == {
        "event_payload_key": "stripe_customer_id",
        "type": "by_id",
    }
    assert meter.value_settings.to_dict() == {"event_payload_key": "value"}
    assert meter.status_transitions.deactivated_at is None
    assert meter.event_time_window is None
    assert client.v1.billing.meters.retrieve(meter.id).display_name == "API calls"


def test_meter_event_name_is_unique_among_active_meters(client: stripe.StripeClient) -> None:
    first = _meter(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _meter(client)
    assert raised.value.param == "event_name"
    client.v1.billing.meters.deactivate(first.id)
    second = _meter(client)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.reactivate(first.id)
    assert second.status == "active"


def test_meter_update_deactivate_reactivate_and_list(client: stripe.StripeClient) -> None:
    meter = _meter(client)
    other = _meter(client, event_name="tokens")
    assert (
        client.v1.billing.meters.update(meter.id, params={"display_name": "Calls"}).display_name
        == "Calls"
    )
    deactivated = client.v1.billing.meters.deactivate(meter.id)
    assert deactivated.status == "inactive" and deactivated.status_transitions.deactivated_at
    inactive = client.v1.billing.meters.list(params={"status": "inactive"}).data
    assert [m.id for m in inactive] == [meter.id]
    assert [m.id for m in client.v1.billing.meters.list(params={"status": "active"}).data] == [
        other.id
    ]
    reactivated = client.v1.billing.meters.reactivate(meter.id)
    assert reactivated.status == "active" and reactivated.status_transitions.deactivated_at is None
    types = [e.type for e in client.v1.events.list(params={"type": "billing.meter.*"}).data]
    assert types == [
        "billing.meter.reactivated",
        "billing.meter.deactivated",
        "billing.meter.updated",
        "billing.meter.created",
        "billing.meter.created",
    ]


def test_meter_event_has_stripes_shape_and_counts(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    event = _usage(client, customer.id, "25", identifier="req-1")
    assert_stripe_shape(event, "billing.meter_event")
    assert event.identifier == "req-1" and event.payload["value"] == "25"
    assert abs(event.timestamp - _now(sim)) <= 2
    generated = _usage(client, customer.id, "5")
    assert generated.identifier
    total = usage_total(sim.sim.platform, meter.id, customer.id, _now(sim) - 60, _now(sim) + 60)
    assert total == Decimal(30)


def test_repeated_identifier_is_refused_and_not_counted(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    _usage(client, customer.id, "10", identifier="usage-42")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _usage(client, customer.id, "10", identifier="usage-42")
    assert raised.value.http_status == 400
    assert "usage-42" in str(raised.value.user_message)
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == 10


def test_identifier_can_be_reused_after_24_hours(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    _usage(client, customer.id, "1", identifier="daily")
    sim.sim.advance(DAY + 1)
    _usage(client, customer.id, "1", identifier="daily")
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == 2


def test_sdk_retry_with_the_same_idempotency_key_counts_once(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    for _ in range(2):
        _usage(client, customer.id, "3", options={"idempotency_key": "meter-key-1"})
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == 3


def test_timestamps_outside_stripes_window_are_refused(sim, client) -> None:  # type: ignore[no-untyped-def]
    _meter(client)
    customer = client.v1.customers.create()
    now = _now(sim)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _usage(client, customer.id, "1", timestamp=now - 36 * DAY)
    assert raised.value.param == "timestamp"
    with pytest.raises(stripe.InvalidRequestError):
        _usage(client, customer.id, "1", timestamp=now + 600)
    _usage(client, customer.id, "1", timestamp=now - 34 * DAY)
    _usage(client, customer.id, "1", timestamp=now + 240)


def test_events_stripe_rejects_asynchronously_are_accepted_but_never_counted(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    _usage(client, "cus_unknown", "4")
    _usage(client, customer.id, "4", event_name="no_such_meter")
    _usage(client, customer.id, "1.5")
    _usage(client, customer.id, "-2")  # negative whole values correct over-reporting
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == -2
    errors = sorted(e.get("_error") or "" for e in sim.sim.platform.all("billing.meter_event"))
    assert errors == ["", "meter_event_customer_not_found", "meter_event_invalid_value", "no_meter"]
    client.v1.billing.meters.deactivate(meter.id)
    _usage(client, customer.id, "9")
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == -2


def test_count_and_last_formulas(sim, client) -> None:  # type: ignore[no-untyped-def]
    counted = _meter(client, "count", event_name="logins")
    last = _meter(client, "last", event_name="seats")
    customer = client.v1.customers.create()
    now = _now(sim)
    for value in ("3", "8"):
        _usage(client, customer.id, value, event_name="logins")
    _usage(client, customer.id, "7", event_name="seats", timestamp=now - 10)
    _usage(client, customer.id, "4", event_name="seats", timestamp=now - 100)
    platform = sim.sim.platform
    assert usage_total(platform, counted.id, customer.id, 0, now + 60) == 2
    assert usage_total(platform, last.id, customer.id, 0, now + 60) == 7


def test_custom_payload_keys(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(
        client,
        customer_mapping={"event_payload_key": "account", "type": "by_id"},
        value_settings={"event_payload_key": "tokens"},
    )
    customer = client.v1.customers.create()
    client.v1.billing.meter_events.create(
        params={"event_name": "api_call", "payload": {"account": customer.id, "tokens": "11"}}
    )
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == 11


def test_cancel_adjustment_removes_the_event_from_totals(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    _usage(client, customer.id, "5", identifier="keep")
    _usage(client, customer.id, "50", identifier="oops")
    adjustment = client.v1.billing.meter_event_adjustments.create(
        params={"event_name": "api_call", "type": "cancel", "cancel": {"identifier": "oops"}}
    )
    assert_stripe_shape(adjustment, "billing.meter_event_adjustment")
    assert adjustment.status == "complete" and adjustment.cancel.identifier == "oops"
    assert usage_total(sim.sim.platform, meter.id, customer.id, 0, _now(sim) + 60) == 5
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create(
            params={"event_name": "api_call", "type": "cancel", "cancel": {"identifier": "nope"}}
        )


def test_event_summaries_aggregate_a_range_and_group_by_hour(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    customer = client.v1.customers.create()
    hour = _now(sim) // 3600 * 3600
    _usage(client, customer.id, "2", timestamp=hour - 3600 + 5)
    _usage(client, customer.id, "3", timestamp=hour - 3600 + 50)
    _usage(client, customer.id, "10", timestamp=hour + 1)
    start, end = hour - 2 * 3600, hour + 3600
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": start, "end_time": end}
    )
    assert len(summaries.data) == 1
    summary = summaries.data[0]
    assert_stripe_shape(summary, "billing.meter_event_summary")
    assert summary.aggregated_value == 15
    assert (summary.start_time, summary.end_time, summary.meter) == (start, end, meter.id)
    hourly = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={
            "customer": customer.id,
            "start_time": start,
            "end_time": end,
            "value_grouping_window": "hour",
        },
    )
    assert [(s.start_time, s.aggregated_value) for s in hourly.data] == [
        (hour, 10),
        (hour - 3600, 5),
    ]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing.meters.event_summaries.list(
            meter.id, params={"customer": customer.id, "start_time": start + 7, "end_time": end}
        )
    assert raised.value.param == "start_time"


def test_meter_events_use_the_customers_test_clock(sim, client) -> None:  # type: ignore[no-untyped-def]
    meter = _meter(client)
    frozen = _now(sim) - 60 * DAY
    try:
        clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen})
    except stripe.InvalidRequestError as error:  # the test clock resource belongs to another module
        pytest.skip(f"test clocks unavailable: {error.user_message}")
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    event = _usage(client, customer.id, "6")
    assert event.timestamp == frozen
    # 40 days before wall time is fine for the clock's customer: it is only 20 days after its now.
    _usage(client, customer.id, "1", timestamp=frozen - 20 * DAY)
    assert usage_total(sim.sim.platform, meter.id, customer.id, frozen - 30 * DAY, frozen + 1) == 7
