"""`catalog sync` and `diff` against stripesim with the real SDK; gateway retries and errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
import yaml

from stripesim.testing import RunningSim
from tollgate.catalog_file import load_catalog_file
from tollgate.config import load_settings
from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.metrics import STRIPE_RATE_LIMIT_RETRIES
from tollgate.services.catalog import diff_catalog, sync_catalog
from tollgate.stripe.errors import StripeAuthenticationFailed, StripeUnavailable
from tollgate.stripe.gateway import StripeGateway

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.yaml"


def _gateway(sim: RunningSim, key: str = "sk_test_sync", **overrides: Any) -> StripeGateway:
    settings = load_settings(
        TOLLGATE_ENV="test", STRIPE_SECRET_KEY=key, STRIPE_API_BASE=sim.url, **overrides
    )
    return StripeGateway(StripeGateway.from_settings(settings)._client, rate_limit_backoff=0.01)


def _catalog_with(change: Any) -> Catalog:
    data = yaml.safe_load(EXAMPLE.read_text())
    change(data)
    return parse_catalog(copy.deepcopy(data))


def test_sync_creates_the_catalog_once(sim: RunningSim, client: stripe.StripeClient) -> None:
    gateway, catalog = _gateway(sim), load_catalog_file(EXAMPLE)
    told: list[tuple[str, int, int]] = []
    first = sync_catalog(
        catalog=catalog,
        gateway=gateway,
        progress=lambda change, done, total: told.append((change.kind, done, total)),
    )
    assert {change.kind for change in first} == {"create_meter", "create_product", "create_price"}
    # The progress callback heard of each change as it was made, counting to the total.
    assert [done for _, done, _ in told] == list(range(1, len(first) + 1))
    assert told[-1][2] == len(first)
    assert client.v1.products.retrieve("tg_feature_runs").unit_label == "run"
    assert sync_catalog(catalog=catalog, gateway=gateway) == []
    pro = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data
    assert [(p.unit_amount, p.currency, p.recurring.interval) for p in pro] == [
        (2900, "usd", "month")
    ]
    overage = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_runs_month_usd"]}).data[0]
    assert overage.recurring.usage_type == "metered"
    assert overage.transform_quantity.divide_by == 1000
    meters = {m.event_name for m in client.v1.billing.meters.list().data}
    assert meters == {"tollgate_runs", "tollgate_storage_gb", "tollgate_cpu_seconds"}
    assert client.v1.products.retrieve("tg_plan_pro").metadata.to_dict() == {"tollgate_plan": "pro"}


def test_changed_price_is_a_new_price_and_the_old_one_is_archived(
    sim: RunningSim, client: stripe.StripeClient
) -> None:
    gateway = _gateway(sim)
    sync_catalog(catalog=load_catalog_file(EXAMPLE), gateway=gateway)
    old = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]

    def raise_pro(data: dict[str, Any]) -> None:
        data["plans"]["pro"]["prices"][0]["amount"] = "39.00"

    dearer = _catalog_with(raise_pro)
    planned = [change.describe() for change in diff_catalog(catalog=dearer, gateway=gateway)]
    assert planned == [
        "~ price tollgate_pro_month_usd: $29.00/month -> $39.00/month "
        "(new price, lookup key moves, old price archived)"
    ]
    sync_catalog(catalog=dearer, gateway=gateway)
    new = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]
    assert new.id != old.id and new.unit_amount == 3900
    archived = client.v1.prices.retrieve(old.id)
    assert archived.active is False and archived.lookup_key is None
    assert diff_catalog(catalog=dearer, gateway=gateway) == []


def test_removed_plan_has_its_prices_archived(sim: RunningSim, client: stripe.StripeClient) -> None:
    gateway = _gateway(sim)
    sync_catalog(catalog=load_catalog_file(EXAMPLE), gateway=gateway)
    without_team = _catalog_with(lambda data: data["plans"].pop("team"))
    archived = [
        c for c in sync_catalog(catalog=without_team, gateway=gateway) if c.kind == "archive_price"
    ]
    assert len(archived) == 8
    active = client.v1.prices.list(params={"product": "tg_plan_team", "active": True}).data
    assert active == []


def test_rate_limited_calls_are_retried(sim: RunningSim) -> None:
    before = STRIPE_RATE_LIMIT_RETRIES._value.get()
    httpx.post(
        f"{sim.url}/_sim/faults",
        json={
            "queue": [
                {"kind": "429", "path": "/v1/products", "method": "POST"},
                {"kind": "429", "path": "/v1/prices", "method": "POST"},
            ]
        },
    )
    assert sync_catalog(catalog=load_catalog_file(EXAMPLE), gateway=_gateway(sim))
    assert STRIPE_RATE_LIMIT_RETRIES._value.get() == before + 2
    assert sync_catalog(catalog=load_catalog_file(EXAMPLE), gateway=_gateway(sim)) == []


def test_a_timeout_after_stripe_acted_is_retried_with_the_same_key(
    sim: RunningSim, client: stripe.StripeClient
) -> None:
    httpx.post(
        f"{sim.url}/_sim/faults",
        json={
            "timeout_seconds": 1.5,
            "queue": [
                {"kind": "timeout", "path": "/v1/products", "method": "POST"},
            ],
        },
    )
    gateway = _gateway(sim, STRIPE_TIMEOUT=0.5, STRIPE_MAX_RETRIES=2)
    sync_catalog(catalog=load_catalog_file(EXAMPLE), gateway=gateway)
    products = [p.id for p in client.v1.products.list(params={"limit": 100}).data]
    assert len(products) == len(set(products)) == 6  # free has no Stripe product


def test_restricted_keys_work(sim: RunningSim) -> None:
    assert sync_catalog(
        catalog=load_catalog_file(EXAMPLE), gateway=_gateway(sim, "rk_test_restricted")
    )


def test_a_rejected_key_is_a_tollgate_error_without_the_key(sim: RunningSim) -> None:
    with pytest.raises(StripeAuthenticationFailed) as raised:
        _gateway(sim, "sk_live_supersecret1234").catalog_state()
    assert "supersecret1234" not in str(raised.value)


def test_unreachable_stripe_is_unavailable(sim: RunningSim) -> None:
    settings = load_settings(
        TOLLGATE_ENV="test",
        STRIPE_SECRET_KEY="sk_test_x",
        STRIPE_API_BASE="http://127.0.0.1:9",
        STRIPE_MAX_RETRIES=0,
    )
    with pytest.raises(StripeUnavailable):
        StripeGateway.from_settings(settings).catalog_state()
