"""Products and prices through the official SDK: shapes, validation, lookup keys, tiers, events."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe

from stripesim.catalog import price_amount
from tests.stripesim.conftest import assert_stripe_shape


def _product(client: stripe.StripeClient, **params) -> stripe.Product:  # type: ignore[no-untyped-def]
    return client.v1.products.create(params={"name": "Pro", **params})


def test_product_round_trips_with_a_custom_id_and_stripes_shape(
    client: stripe.StripeClient,
) -> None:
    product = _product(client, id="prod_pro", metadata={"plan": "pro"}, description="The Pro plan")
    assert product.id == "prod_pro"
    assert_stripe_shape(product, "product")
    assert product.active is True and product.default_price is None
    assert product.package_dimensions is None and product.type == "service"
    fetched = client.v1.products.retrieve("prod_pro")
    assert fetched.metadata["plan"] == "pro"
    assert fetched.description == "The Pro plan"


def test_product_custom_id_cannot_be_reused(client: stripe.StripeClient) -> None:
    _product(client, id="prod_once")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        _product(client, id="prod_once")
    assert raised.value.code == "resource_already_exists"


def test_product_update_records_previous_attributes(client, sim) -> None:  # type: ignore[no-untyped-def]
    product = _product(client)
    updated = client.v1.products.update(product.id, params={"active": False, "name": "Pro 2"})
    assert updated.active is False and updated.name == "Pro 2"
    event = client.v1.events.list(params={"type": "product.updated"}).data[0]
    assert event.data.previous_attributes.to_dict() == {"active": True, "name": "Pro"}


def test_product_list_filters_active_and_ids(client: stripe.StripeClient) -> None:
    first = _product(client)
    second = _product(client, active=False)
    third = _product(client)
    assert [p.id for p in client.v1.products.list(params={"active": False}).data] == [second.id]
    listed = client.v1.products.list(params={"ids": [first.id, third.id]}).data
    assert [p.id for p in listed] == [third.id, first.id]


def test_product_search_by_metadata(client: stripe.StripeClient) -> None:
    wanted = _product(client, metadata={"tier": "gold"})
    _product(client, metadata={"tier": "silver"})
    found = client.v1.products.search(params={"query": "metadata['tier']:'gold'"})
    assert [p.id for p in found.data] == [wanted.id]


def test_product_with_prices_cannot_be_deleted_but_an_empty_one_can(client) -> None:  # type: ignore[no-untyped-def]
    product = _product(client)
    client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": 100})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.delete(product.id)
    empty = _product(client)
    deleted = client.v1.products.delete(empty.id)
    assert deleted.deleted is True
    assert_stripe_shape(deleted, "deleted_product")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.products.retrieve(empty.id)
    assert raised.value.http_status == 404


def test_product_default_price_data_creates_the_default_price(client: stripe.StripeClient) -> None:
    product = _product(
        client,
        default_price_data={
            "currency": "eur",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
        },
    )
    price = client.v1.prices.retrieve(product.default_price)
    assert price.product == product.id and price.currency == "eur" and price.unit_amount == 900


def test_recurring_price_has_stripes_shape_and_lowercased_currency(
    client: stripe.StripeClient,
) -> None:
    product = _product(client)
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "USD",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
            "nickname": "Pro monthly",
        }
    )
    assert_stripe_shape(price, "price")
    assert price.id.startswith("price_")
    assert price.currency == "usd"
    assert price.type == "recurring"
    assert price.unit_amount == 2000 and price.unit_amount_decimal == Decimal("2000")
    assert price.recurring.to_dict() == {
        "interval": "month",
        "interval_count": 1,
        "meter": None,
        "usage_type": "licensed",
        "trial_period_days": None,
    }
    assert price.transform_quantity is None and price.custom_unit_amount is None
    assert price.tax_behavior == "unspecified" and price.billing_scheme == "per_unit"


def test_one_time_price_with_inline_product_data(client: stripe.StripeClient) -> None:
    price = client.v1.prices.create(
        params={"product_data": {"name": "Setup fee"}, "currency": "jpy", "unit_amount": 5000}
    )
    assert price.type == "one_time" and price.recurring is None
    assert client.v1.products.retrieve(price.product).name == "Setup fee"
    assert price.unit_amount == 5000  # zero-decimal: whole yen


def test_sub_cent_unit_amount_decimal_leaves_unit_amount_null(client: stripe.StripeClient) -> None:
    product = _product(client)
    sub_cent = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount_decimal": Decimal("0.25")}
    )
    assert sub_cent.unit_amount is None and sub_cent.unit_amount_decimal == Decimal("0.25")
    whole = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount_decimal": Decimal("150.00")}
    )
    assert whole.unit_amount == 150 and whole.unit_amount_decimal == Decimal("150")


def test_price_rejects_bad_currency_and_missing_amount(client: stripe.StripeClient) -> None:
    product = _product(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(params={"product": product.id, "currency": "zzz", "unit_amount": 1})
    assert raised.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(params={"product": product.id, "currency": "usd"})
    assert raised.value.code == "parameter_missing"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(
            params={"product": "prod_nope", "currency": "usd", "unit_amount": 1}
        )
    assert raised.value.code == "resource_missing" and raised.value.param == "product"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1,
                "unit_amount_decimal": "1",
            }
        )
    assert client.v1.prices.list().data == []


def test_tiered_graduated_price_shows_tiers_only_when_expanded(client: stripe.StripeClient) -> None:
    product = _product(client)
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "recurring": {"interval": "month"},
            "tiers": [
                {"up_to": 10, "unit_amount": 100, "flat_amount": 500},
                {"up_to": "inf", "unit_amount_decimal": Decimal("50.5")},
            ],
        }
    )
    assert_stripe_shape(price, "price")
    assert price.unit_amount is None and price.tiers_mode == "graduated"
    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["tiers"]})
    assert [t.to_dict() for t in expanded.tiers] == [
        {
            "flat_amount": 500,
            "flat_amount_decimal": Decimal("500"),
            "unit_amount": 100,
            "unit_amount_decimal": Decimal("100"),
            "up_to": 10,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": None,
            "unit_amount_decimal": Decimal("50.5"),
            "up_to": None,
        },
    ]
    listed = client.v1.prices.list(params={"expand": ["data.tiers"]}).data[0]
    assert len(listed.tiers) == 2


def test_tiers_must_end_with_inf(client: stripe.StripeClient) -> None:
    product = _product(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [{"up_to": 10, "unit_amount": 1}],
            }
        )
    assert raised.value.param == "tiers[0][up_to]"


def test_price_amounts_follow_tiers_and_transform_quantity(sim, client) -> None:  # type: ignore[no-untyped-def]
    product = _product(client)
    tiers = [
        {"up_to": 10, "unit_amount": 100, "flat_amount": 500},
        {"up_to": "inf", "unit_amount": 50},
    ]
    graduated = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": tiers,
        }
    )
    volume = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": tiers,
        }
    )
    packaged = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "transform_quantity": {"divide_by": 1000, "round": "up"},
        }
    )
    stored = sim.sim.platform
    assert price_amount(stored.get(graduated.id, "price"), 15) == Decimal(500 + 10 * 100 + 5 * 50)
    assert price_amount(stored.get(volume.id, "price"), 15) == Decimal(15 * 50)
    assert price_amount(stored.get(volume.id, "price"), 0) == 0
    assert price_amount(stored.get(packaged.id, "price"), 1001) == Decimal(2000)
    assert packaged.transform_quantity.to_dict() == {"divide_by": 1000, "round": "up"}


def test_metered_price_needs_an_active_meter(client: stripe.StripeClient) -> None:
    product = _product(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert raised.value.param == "recurring[meter]"
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Calls",
            "event_name": "calls",
            "default_aggregation": {"formula": "sum"},
        }
    )
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.1",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    assert price.recurring.meter == meter.id and price.recurring.usage_type == "metered"
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
    listed = client.v1.prices.list(params={"recurring": {"meter": meter.id}}).data
    assert [p.id for p in listed] == [price.id]


def test_lookup_key_clash_is_refused_unless_transferred(client: stripe.StripeClient) -> None:
    product = _product(client)
    base = {"product": product.id, "currency": "usd", "recurring": {"interval": "month"}}
    old = client.v1.prices.create(params={**base, "unit_amount": 1000, "lookup_key": "pro"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(params={**base, "unit_amount": 1200, "lookup_key": "pro"})
    assert raised.value.param == "lookup_key"
    new = client.v1.prices.create(
        params={**base, "unit_amount": 1200, "lookup_key": "pro", "transfer_lookup_key": True}
    )
    assert client.v1.prices.retrieve(old.id).lookup_key is None
    found = client.v1.prices.list(params={"lookup_keys": ["pro"]}).data
    assert [p.id for p in found] == [new.id]
    # Updating can move it back.
    client.v1.prices.update(old.id, params={"lookup_key": "pro", "transfer_lookup_key": True})
    assert [p.id for p in client.v1.prices.list(params={"lookup_keys": ["pro"]}).data] == [old.id]
    assert client.v1.prices.retrieve(new.id).lookup_key is None


def test_inactive_price_frees_its_lookup_key(client: stripe.StripeClient) -> None:
    product = _product(client)
    old = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 1, "lookup_key": "k"}
    )
    client.v1.prices.update(old.id, params={"active": False})
    new = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 2, "lookup_key": "k"}
    )
    assert new.lookup_key == "k"


def test_price_amount_is_immutable(client: stripe.StripeClient) -> None:
    product = _product(client)
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 1}
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.update(price.id, params={"unit_amount": 2})  # type: ignore[typeddict-unknown-key]
    assert raised.value.code == "parameter_unknown"
    updated = client.v1.prices.update(
        price.id, params={"nickname": "Basic", "metadata": {"a": "1"}, "tax_behavior": "exclusive"}
    )
    assert updated.nickname == "Basic" and updated.tax_behavior == "exclusive"
    assert updated.unit_amount == 1


def test_price_list_filters(client: stripe.StripeClient) -> None:
    product = _product(client)
    other = _product(client)
    monthly = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1,
            "recurring": {"interval": "month"},
        }
    )
    yearly = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "eur",
            "unit_amount": 10,
            "recurring": {"interval": "year"},
        }
    )
    one_time = client.v1.prices.create(
        params={"product": other.id, "currency": "usd", "unit_amount": 5}
    )

    def ids(**params) -> list[str]:  # type: ignore[no-untyped-def]
        return [p.id for p in client.v1.prices.list(params=params).data]

    assert ids(product=product.id) == [yearly.id, monthly.id]
    assert ids(type="one_time") == [one_time.id]
    assert ids(currency="eur") == [yearly.id]
    assert ids(recurring={"interval": "month"}) == [monthly.id]
    client.v1.prices.update(monthly.id, params={"active": False})
    assert ids(active=True, type="recurring") == [yearly.id]


def test_price_events_are_emitted_without_tiers(client: stripe.StripeClient) -> None:
    product = _product(client)
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": [{"up_to": "inf", "unit_amount": 3}],
        }
    )
    client.v1.prices.update(price.id, params={"nickname": "Vol"})
    events = client.v1.events.list(params={"type": "price.*"}).data
    assert [e.type for e in events] == ["price.updated", "price.created"]
    assert "tiers" not in events[1].data.object.to_dict()
    assert events[0].data.previous_attributes.to_dict() == {"nickname": None}


def test_currency_options_are_refused_rather_than_ignored(client: stripe.StripeClient) -> None:
    product = _product(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 100,
                "currency_options": {"eur": {"unit_amount": 90}},
            }
        )
    assert raised.value.param == "currency_options"
    assert client.v1.prices.list().data == []


def test_price_expands_its_product_and_can_be_searched(client: stripe.StripeClient) -> None:
    product = _product(client)
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 100,
            "metadata": {"plan": "pro"},
        }
    )
    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["product"]})
    assert expanded.product.id == product.id and expanded.product.name == "Pro"
    listed = client.v1.prices.list(params={"expand": ["data.product"]}).data
    assert listed[0].product.id == product.id
    found = client.v1.prices.search(params={"query": "metadata['plan']:'pro'"}).data
    assert [p.id for p in found] == [price.id]
