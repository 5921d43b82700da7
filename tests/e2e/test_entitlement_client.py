"""The Python client's gate: `check` over HTTP (cached, told of changes) and in process, the
decorator, and the FastAPI dependency answering 402/403 with the reason; over both backends,
with usage counted in the database and in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from tests.e2e.conftest import open_client, serve
from tollgate.bootstrap import Container, build_container
from tollgate.client import FeatureDenied, LocalTollgate, Tollgate, require_feature
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key


@pytest.fixture
def served(
    db: Database, make_settings: Callable[..., Settings], counters: dict[str, str]
) -> Iterator[tuple[Container, str, str]]:
    container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **counters))
    key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
    with serve(container) as base_url:
        yield container, base_url, key.secret
    container.close()


def sign_up(billing: Tollgate | LocalTollgate, customer: str, plan: str | None = None) -> None:
    fields: dict[str, Any] = {"offline": True, **({"plan": plan} if plan else {})}
    billing.create_customer(customer, email=f"b@{customer}.example", **fields)


def test_check_is_cached_and_told_of_changes(
    served: tuple[Container, str, str], backend: str
) -> None:
    # Over HTTP the client keeps decisions 30 s unless the change feed says otherwise; in
    # process the container's cache keeps them, followed by the same feed.
    with open_client(backend, *served, decision_ttl=30) as billing:
        sign_up(billing, "acme")
        first = billing.check("acme", "marketplace")
        assert not first.allowed and first.reason.startswith("Free plan does not include")
        assert billing.check("acme", "marketplace") is first  # from the cache

        billing.change_subscription("acme", plan="pro", interval="month")
        deadline = time.monotonic() + 5
        while not billing.check("acme", "marketplace").allowed:
            assert time.monotonic() < deadline, "the client never heard of the change"
            time.sleep(0.01)

        usage = billing.record_usage(
            [{"id": f"r{i}", "customer": "acme", "meter": "runs", "value": 10} for i in range(5)]
        )
        assert usage == {"accepted": 5, "duplicates": 0, "rejected": []}
        assert billing.get_usage("acme")["meters"]["runs"]["used"] == 50
        assert billing.get_entitlements("acme")["features"]["marketplace"]["enabled"] is True


@pytest.fixture
def billing(served: tuple[Container, str, str], backend: str) -> Iterator[Tollgate | LocalTollgate]:
    with open_client(backend, *served) as client:
        yield client


def test_the_decorator_and_the_dependency_refuse_with_the_reason(
    billing: Tollgate | LocalTollgate,
) -> None:
    sign_up(billing, "small")
    sign_up(billing, "big", plan="pro")
    billing.record_usage([{"id": "s-1", "customer": "small", "meter": "runs", "value": 1000}])

    @billing.requires("marketplace", customer_arg="org")
    def publish(org: str, title: str) -> str:
        return f"{org}:{title}"

    assert publish("big", title="hello") == "big:hello"
    with pytest.raises(FeatureDenied) as denied:
        publish(org="small", title="hello")
    assert denied.value.status == 403
    assert (
        denied.value.decision.reason
        == "Free plan does not include Marketplace; upgrade to Pro for it."
    )

    app = FastAPI()

    @app.post(
        "/orgs/{customer_id}/listings",
        dependencies=[Depends(require_feature(billing, "marketplace"))],
    )
    def listings(customer_id: str) -> dict[str, str]:
        return {"published": customer_id}

    @app.post("/orgs/{customer_id}/runs")
    def run(customer_id: str, decision: Any = Depends(require_feature(billing, "runs"))) -> Any:
        return {"remaining": decision.remaining}

    with TestClient(app) as web:
        assert web.post("/orgs/big/listings").json() == {"published": "big"}
        refused = web.post("/orgs/small/listings")
        assert refused.status_code == 403
        assert refused.json()["detail"]["code"] == "not_in_plan"
        over = web.post("/orgs/small/runs")
        assert over.status_code == 402
        assert over.json()["detail"]["reason"] == (
            "Free plan: 1,000 runs a month, 1,000 used; upgrade to Pro for more."
        )
        assert web.post("/orgs/big/runs").json() == {"remaining": 100_000}
