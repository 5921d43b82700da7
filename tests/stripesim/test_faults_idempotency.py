"""Injected faults (500, 429, timeouts) and how idempotency keys make the SDK's retries safe."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe


def _faults(sim, **settings: Any) -> None:  # type: ignore[no-untyped-def]
    httpx.post(f"{sim.url}/_sim/faults", json=settings).raise_for_status()


def _retrying_client(sim, retries: int = 2, **options: Any) -> stripe.StripeClient:  # type: ignore[no-untyped-def]
    return stripe.StripeClient(
        "sk_test_stripesim", base_addresses={"api": sim.url}, max_network_retries=retries, **options
    )


def _customers(sim) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return list(sim.sim.platform.all("customer"))


def test_sdk_retry_after_a_500_creates_exactly_one_object(sim) -> None:  # type: ignore[no-untyped-def]
    _faults(sim, queue=[{"kind": "500", "path": "/v1/customers", "method": "POST"}])
    customer = _retrying_client(sim).v1.customers.create(params={"email": "retry@example.com"})
    assert [c["id"] for c in _customers(sim)] == [customer.id]


def test_a_500_is_not_remembered_under_its_idempotency_key(sim, client) -> None:  # type: ignore[no-untyped-def]
    _faults(sim, queue=[{"kind": "500", "path": "/v1/customers", "method": "POST"}])
    with pytest.raises(stripe.APIError) as raised:
        client.v1.customers.create(options={"idempotency_key": "after-500"})
    assert raised.value.http_status == 500
    assert _customers(sim) == []
    again = client.v1.customers.create(options={"idempotency_key": "after-500"})
    assert [c["id"] for c in _customers(sim)] == [again.id]


def test_rate_500_fails_every_request_until_turned_off(sim) -> None:  # type: ignore[no-untyped-def]
    _faults(sim, rate_500=1.0)
    client = _retrying_client(sim, retries=1)
    with pytest.raises(stripe.APIError):
        client.v1.customers.create()
    assert _customers(sim) == []
    _faults(sim, rate_500=0.0)
    client.v1.customers.create()
    assert len(_customers(sim)) == 1


def test_lock_timeout_429_is_retried_by_the_sdk(sim) -> None:  # type: ignore[no-untyped-def]
    _faults(sim, queue=[{"kind": "lock_timeout", "path": "/v1/customers", "method": "POST"}])
    customer = _retrying_client(sim).v1.customers.create()
    assert [c["id"] for c in _customers(sim)] == [customer.id]


def test_rate_limit_429_reaches_the_caller_and_a_retry_with_the_key_succeeds(sim) -> None:  # type: ignore[no-untyped-def]
    # As at Stripe, the SDK does not retry a true rate limit (no `Stripe-Should-Retry`): the
    # integration must back off and retry itself, with the same idempotency key.
    _faults(sim, queue=[{"kind": "429", "path": "/v1/customers", "method": "POST"}])
    client = _retrying_client(sim)
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.create(options={"idempotency_key": "rl-1"})
    assert raised.value.http_status == 429
    assert raised.value.json_body["error"]["code"] == "rate_limit"
    assert _customers(sim) == []
    first = client.v1.customers.create(options={"idempotency_key": "rl-1"})
    second = client.v1.customers.create(options={"idempotency_key": "rl-1"})
    assert first.id == second.id
    assert len(_customers(sim)) == 1


def test_timeout_executes_the_request_and_the_retry_replays_it(sim) -> None:  # type: ignore[no-untyped-def]
    _faults(
        sim,
        timeout_seconds=1.0,
        queue=[{"kind": "timeout", "path": "/v1/customers", "method": "POST"}],
    )
    client = _retrying_client(sim, http_client=stripe.RequestsClient(timeout=0.5))
    customer = client.v1.customers.create(params={"email": "slow@example.com"})
    assert [c["id"] for c in _customers(sim)] == [customer.id]
    assert len([e for e in sim.sim.platform.all("event") if e["type"] == "customer.created"]) == 1


def test_timeout_without_retries_still_created_the_object(sim) -> None:  # type: ignore[no-untyped-def]
    _faults(
        sim,
        timeout_seconds=1.0,
        queue=[{"kind": "timeout", "path": "/v1/customers", "method": "POST"}],
    )
    client = _retrying_client(sim, retries=0, http_client=stripe.RequestsClient(timeout=0.3))
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create(options={"idempotency_key": "lost-answer"})
    assert len(_customers(sim)) == 1  # Stripe acted; only the answer was lost
    replayed = client.v1.customers.create(options={"idempotency_key": "lost-answer"})
    assert [c["id"] for c in _customers(sim)] == [replayed.id]


def test_queued_faults_only_hit_matching_requests(sim, client) -> None:  # type: ignore[no-untyped-def]
    _faults(sim, queue=[{"kind": "500", "path": "/v1/products", "method": "POST"}])
    client.v1.customers.create()
    client.v1.customers.list()
    with pytest.raises(stripe.APIError):
        client.v1.products.create(params={"name": "P"})
    client.v1.products.create(params={"name": "P"})


def test_idempotent_replay_is_marked_and_returns_the_first_body(sim) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": "Bearer sk_test_x", "Idempotency-Key": "raw-1"}
    first = httpx.post(f"{sim.url}/v1/customers", data={"email": "a@x"}, headers=headers)
    again = httpx.post(f"{sim.url}/v1/customers", data={"email": "a@x"}, headers=headers)
    assert first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers


def test_handler_errors_are_replayed_but_validation_errors_are_not(sim, client) -> None:  # type: ignore[no-untyped-def]
    # A 404 from an executing endpoint is saved under the key, as at Stripe...
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(
            "cus_missing", params={"name": "x"}, options={"idempotency_key": "e-1"}
        )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.update(
            "cus_missing", params={"name": "x"}, options={"idempotency_key": "e-1"}
        )
    assert raised.value.http_status == 404
    # ...but a request that failed parameter validation saved nothing.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.create(params={"emial": "x"}, options={"idempotency_key": "e-2"})  # type: ignore[typeddict-unknown-key]
    fixed = client.v1.customers.create(params={"email": "x"}, options={"idempotency_key": "e-2"})
    assert [c["id"] for c in _customers(sim)] == [fixed.id]


def test_idempotency_keys_are_scoped_to_each_account(sim, client) -> None:  # type: ignore[no-untyped-def]
    account = client.v1.accounts.create(params={"type": "express"})
    platform = client.v1.customers.create(options={"idempotency_key": "shared"})
    connected = client.v1.customers.create(
        options={"idempotency_key": "shared", "stripe_account": account.id}
    )
    assert platform.id != connected.id
