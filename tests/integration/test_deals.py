"""Issue 20: per-customer deals. An override beats the plan and ends on its date; a one-off
usage grant raises this period's included usage; both are audited and bad input changes nothing.

Customers are offline (their plan is Tollgate's own), on SQLite and PostgreSQL, over the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def app(
    db: Database, make_settings: Callable[..., Settings], clock: FrozenClock
) -> Iterator[tuple[TestClient, Container]]:
    container = build_container(make_settings(db.url, STRIPE_SECRET_KEY=""), clock=clock)
    key = create_api_key(db=container.db, clock=clock, name="console", scope="write")
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {key.secret}"
        yield client, container
    container.close()


def offline_customer(api: TestClient, customer_id: str, plan: str) -> None:
    body = {"id": customer_id, "email": f"b@{customer_id}.example", "offline": True, "plan": plan}
    answer = api.post("/v1/customers", json=body)
    assert answer.status_code == 201, answer.text


def features(api: TestClient, customer_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/customers/{customer_id}/entitlements")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["features"])


def audit(db: Database) -> list[tuple[str, str, str]]:
    with db.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT object_type, object_id, action FROM audit_log "
                "WHERE object_type IN ('customer_override', 'usage_grant') ORDER BY id"
            )
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_an_override_beats_the_plan_and_expires_on_its_date(
    app: tuple[TestClient, Container], clock: FrozenClock
) -> None:
    api, container = app
    offline_customer(api, "bigco", "pro")
    before = features(api, "bigco")
    assert (before["runs"]["included"], before["sso"]["enabled"]) == (100_000, False)

    ends = (NOW + timedelta(days=10)).isoformat()
    deal = api.put("/v1/customers/bigco/overrides/runs", json={"limit": 5_000_000, "ends_at": ends})
    assert deal.status_code == 200, deal.text
    assert deal.json()["limit"] == 5_000_000
    again = api.put(
        "/v1/customers/bigco/overrides/runs", json={"limit": 5_000_000, "ends_at": ends}
    )
    assert again.status_code == 200 and again.json() == deal.json()  # the same grant: no change
    sso = api.put("/v1/customers/bigco/overrides/sso", json={"enabled": True})
    assert sso.status_code == 200, sso.text
    during = features(api, "bigco")
    assert during["runs"]["included"] == 5_000_000
    assert during["sso"]["enabled"] is True
    assert api.get("/v1/customers/bigco/entitlements/sso").json()["allowed"] is True
    assert api.get("/v1/customers/bigco/entitlements").json()["overrides"] == ["runs", "sso"]

    clock.advance(timedelta(days=10))  # the runs deal ends; the SSO one has no end
    after = features(api, "bigco")
    assert after["runs"]["included"] == 100_000
    assert after["sso"]["enabled"] is True
    assert api.delete("/v1/customers/bigco/overrides/sso").status_code == 204
    assert features(api, "bigco")["sso"]["enabled"] is False
    assert api.delete("/v1/customers/bigco/overrides/sso").status_code == 404

    listed = api.get("/v1/customers/bigco/overrides").json()["overrides"]
    assert [(o["feature"], o["limit"]) for o in listed] == [("runs", 5_000_000)]
    changed = api.put("/v1/customers/bigco/overrides/runs", json={"limit": 6_000_000})
    assert changed.status_code == 200, changed.text
    assert audit(container.db) == [
        ("customer_override", "bigco/runs", "created"),
        ("customer_override", "bigco/sso", "created"),
        ("customer_override", "bigco/sso", "deleted"),
        ("customer_override", "bigco/runs", "updated"),
    ]


def test_an_unlimited_override_lifts_a_limit_feature(app: tuple[TestClient, Container]) -> None:
    api, _ = app
    offline_customer(api, "tiny", "free")
    assert features(api, "tiny")["workflows"]["limit"] == 1
    answer = api.put("/v1/customers/tiny/overrides/workflows", json={"limit": "unlimited"})
    assert answer.status_code == 200, answer.text
    assert features(api, "tiny")["workflows"]["limit"] is None
    check = api.get("/v1/customers/tiny/entitlements/workflows?in_use=50")
    assert check.json()["allowed"] is True


@pytest.mark.parametrize(
    ("feature", "body", "param", "status"),
    [
        ("sso", {"limit": 3}, "limit", 400),
        ("runs", {}, "limit", 400),
        ("runs", {"limit": 10, "ends_at": "2026-12-01T00:00:00Z"}, "ends_at", 400),
        ("runz", {"limit": 10}, "feature", 404),
        ("runs", {"limit": "lots"}, None, 400),
        ("runs", {"limit": -1}, None, 400),
    ],
)
def test_a_bad_override_is_refused_and_changes_nothing(
    app: tuple[TestClient, Container],
    feature: str,
    body: dict[str, Any],
    param: str | None,
    status: int,
) -> None:
    api, container = app
    offline_customer(api, "acme", "pro")
    answer = api.put(f"/v1/customers/acme/overrides/{feature}", json=body)
    assert answer.status_code == status, answer.text
    if param is not None:
        assert answer.json()["error"]["param"] == param
    assert api.get("/v1/customers/acme/overrides").json() == {"overrides": []}
    assert api.put("/v1/customers/ghost/overrides/runs", json={"limit": 1}).status_code == 404
    assert audit(container.db) == []


def test_a_usage_grant_adds_included_runs_for_this_period_once(
    app: tuple[TestClient, Container],
) -> None:
    api, container = app
    offline_customer(api, "tiny", "free")  # 1,000 runs a month, a hard limit
    events = [{"id": "fill", "customer": "tiny", "meter": "runs", "value": 1000}]
    assert api.post("/v1/usage", json={"events": events}).json()["accepted"] == 1
    assert api.get("/v1/customers/tiny/entitlements/runs").json()["allowed"] is False

    body = {"feature": "runs", "quantity": 500, "reason": "support", "idempotency_key": "tk-1"}
    granted = api.post("/v1/customers/tiny/grants", json=body)
    assert granted.status_code == 201, granted.text
    again = api.post("/v1/customers/tiny/grants", json=body)
    assert again.status_code == 200  # the same grant, not a second one
    other = api.post("/v1/customers/tiny/grants", json={**body, "quantity": 9})
    assert other.status_code == 409

    runs = features(api, "tiny")["runs"]
    assert (runs["included"], runs["limit"], runs["remaining"]) == (1500, 1500, 500)
    more = [
        {"id": f"more-{i}", "customer": "tiny", "meter": "runs", "value": 250} for i in range(3)
    ]
    result = api.post("/v1/usage", json={"events": more}).json()
    assert result["accepted"] == 2 and len(result["rejected"]) == 1  # the grant is the cap
    refused = api.post(
        "/v1/customers/tiny/grants",
        json={"feature": "workflows", "quantity": 5, "idempotency_key": "tk-2"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "feature"
    assert audit(container.db) == [("usage_grant", "tiny/tk-1", "created")]
