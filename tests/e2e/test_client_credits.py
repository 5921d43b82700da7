"""The Python client's credit verbs, over HTTP and in-process: the balance and its entries,
support grants, a pack bought on the hosted Checkout page, and the cached gate told of grants.
Usage is counted in the database and in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import World, open_client
from tests.e2e.test_credits_usage import usage_catalog
from tollgate.client import (
    Conflict,
    CreditEntry,
    Credits,
    InvalidRequest,
    LocalTollgate,
    NotFound,
    Tollgate,
)


@pytest.fixture
def credits_world(
    make_world: Callable[..., World], tmp_path: Path, counters: dict[str, str]
) -> World:
    return make_world(
        TOLLGATE_CATALOG=usage_catalog(tmp_path), TOLLGATE_ONBOARD_CREDITS=100, **counters
    )


@pytest.fixture
def billing(backend: str, credits_world: World) -> Iterator[Tollgate | LocalTollgate]:
    world = credits_world
    with open_client(backend, world.container, world.base_url, world.key) as client:
        yield client


def test_the_client_reads_grants_and_sells_credits(
    billing: Tollgate | LocalTollgate, credits_world: World
) -> None:
    billing.create_customer("acme", email="billing@acme.example")
    start = billing.get_credits("acme")
    assert isinstance(start, Credits)
    assert (start.customer, start.balance, start.allowance) == ("acme", 100, 0)
    [onboarding] = start.entries
    assert isinstance(onboarding, CreditEntry) and isinstance(onboarding.created, datetime)
    assert (onboarding.kind, onboarding.amount, onboarding.reason, onboarding.actor) == (
        "grant",
        100,
        "onboarding",
        "system",
    )
    assert (onboarding.expires_at, onboarding.remaining) == (None, 100)

    expires_at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    promo = billing.grant_credits(
        "acme",
        amount=50,
        reason="launch promotion",
        idempotency_key="promo-1",
        expires_at=expires_at,
    )
    assert (promo.kind, promo.amount, promo.remaining, promo.expires_at) == (
        "grant",
        50,
        50,
        expires_at,
    )
    assert promo.actor == ("library" if isinstance(billing, LocalTollgate) else "api:app")
    again = billing.grant_credits(
        "acme",
        amount=50,
        reason="launch promotion",
        idempotency_key="promo-1",
        expires_at=expires_at,
    )
    assert again == promo  # the same grant, made once
    with pytest.raises(Conflict) as reused:
        billing.grant_credits("acme", amount=70, reason="other", idempotency_key="promo-1")
    assert reused.value.param == "idempotency_key"
    with pytest.raises(InvalidRequest) as zero:
        billing.grant_credits("acme", amount=0, reason="nothing", idempotency_key="zero")
    assert zero.value.param == "amount"
    with pytest.raises(InvalidRequest) as naive:
        billing.grant_credits(
            "acme",
            amount=5,
            reason="no time zone",
            idempotency_key="naive",
            expires_at=datetime(2030, 1, 1),
        )
    assert naive.value.param is not None and "expires_at" in naive.value.param
    with pytest.raises(NotFound):
        billing.get_credits("ghost")
    with pytest.raises(NotFound):
        billing.grant_credits("ghost", amount=5, reason="x", idempotency_key="ghost")
    assert billing.get_credits("acme").balance == 150

    url = billing.buy_credits(
        "acme",
        pack="starter",
        success_url="https://app.example/credits/done",
        cancel_url="https://app.example/credits",
    )
    assert url.startswith(credits_world.sim.url)
    assert credits_world.pay(url).status_code == 303
    credits_world.settle()
    bought = billing.get_credits("acme")
    assert bought.balance == 1150
    assert [(e.kind, e.amount, e.reason) for e in bought.entries] == [
        ("purchase", 1000, "credit pack starter"),
        ("grant", 50, "launch promotion"),
        ("grant", 100, "onboarding"),
    ]
    assert [e.kind for e in billing.get_credits("acme", limit=1).entries] == ["purchase"]
    with pytest.raises(InvalidRequest):
        billing.get_credits("acme", limit=0)
    with pytest.raises(NotFound) as unknown:
        billing.buy_credits(
            "acme",
            pack="mega",
            success_url="https://app.example/credits/done",
            cancel_url="https://app.example/credits",
        )
    assert unknown.value.param == "pack" and "starter" in unknown.value.message


def test_a_grant_reaches_the_clients_cached_check(
    billing: Tollgate | LocalTollgate, credits_world: World
) -> None:
    cached = Tollgate(credits_world.base_url, credits_world.key, decision_ttl=30)
    try:
        billing.create_customer("acme", email="billing@acme.example")
        used = billing.record_usage(
            [{"id": "spend-all", "customer": "acme", "meter": "ai_calls", "value": 20}]
        )
        assert used["accepted"] == 1
        denied = cached.check("acme", "ai_calls")
        assert (denied.allowed, denied.code.value) == (False, "insufficient_credits")
        assert cached.check("acme", "ai_calls") is denied  # from the cache
        assert not billing.check("acme", "ai_calls").allowed

        billing.grant_credits("acme", amount=5, reason="support", idempotency_key="t-1")
        assert billing.check("acme", "ai_calls").allowed  # the granting side: at once
        deadline = time.monotonic() + 5
        while not cached.check("acme", "ai_calls").allowed:  # another client: by the feed
            assert time.monotonic() < deadline, "the cached client never heard of the grant"
            time.sleep(0.01)
    finally:
        cached.close()
