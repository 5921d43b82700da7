"""The same write sent eight times at once, as a client retrying after a timeout does: every
answer is a clear one (no 500), and what is stored is what one request would have stored.

Found by sending them: a usage grant raced on its idempotency key (both databases), and on
PostgreSQL an override or a spend cap set twice at once raced on its row, each answering 500.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import serve
from tests.e2e.test_auto_topup import topup_catalog
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
AT_ONCE = 8


@pytest.fixture
def served(
    db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[httpx.Client, Container]]:
    clock = FrozenClock(NOW)
    settings = make_settings(db.url, STRIPE_SECRET_KEY="", TOLLGATE_CATALOG=topup_catalog(tmp_path))
    container = build_container(settings, clock=clock)
    key = create_api_key(db=container.db, clock=clock, name="app", scope="write")
    headers = {"Authorization": f"Bearer {key.secret}"}
    with serve(container) as base_url, httpx.Client(base_url=base_url, headers=headers) as api:
        for customer, plan in (("tiny", "free"), ("big", "pro")):
            body = {"id": customer, "email": f"b@{customer}.example", "offline": True, "plan": plan}
            assert api.post("/v1/customers", json=body).status_code == 201
        yield api, container
    container.close()


def at_once(
    api: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    *,
    also: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> list[int]:
    """Send the same request AT_ONCE times together (half of them with the body `also`, if
    given: two different requests at once); return the statuses."""
    statuses: list[int] = []
    start = threading.Barrier(AT_ONCE)

    def send(json: dict[str, Any] | None) -> None:
        sent = {**api.headers, **(headers or {})}
        with httpx.Client(base_url=api.base_url, headers=sent, timeout=60) as client:
            start.wait()
            statuses.append(client.request(method, path, json=json).status_code)

    bodies = [also if also is not None and n % 2 else body for n in range(AT_ONCE)]
    threads = [threading.Thread(target=send, args=(json,)) for json in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def count(container: Container, sql: str) -> int:
    with container.db.engine.connect() as connection:
        return int(connection.execute(sa.text(sql)).scalar_one())


def test_a_usage_grant_sent_at_once_is_made_once(
    served: tuple[httpx.Client, Container],
) -> None:
    api, container = served
    body = {"feature": "runs", "quantity": 5, "idempotency_key": "support-1"}
    assert at_once(api, "POST", "/v1/customers/tiny/grants", body) == [200] * 7 + [201]
    assert count(container, "SELECT count(*) FROM usage_grants") == 1
    audited = "SELECT count(*) FROM audit_log WHERE object_type = 'usage_grant'"
    assert count(container, audited) == 1
    runs = api.get("/v1/customers/tiny/entitlements").json()["features"]["runs"]
    assert runs["included"] == 1005
    # The same key with another quantity is still refused, clearly.
    other = api.post("/v1/customers/tiny/grants", json={**body, "quantity": 9})
    assert other.status_code == 409


def test_an_override_set_at_once_is_one_override(served: tuple[httpx.Client, Container]) -> None:
    api, container = served
    assert at_once(api, "PUT", "/v1/customers/tiny/overrides/runs", {"limit": 7}) == [200] * 8
    assert count(container, "SELECT count(*) FROM customer_overrides") == 1
    runs = api.get("/v1/customers/tiny/entitlements").json()["features"]["runs"]
    assert runs["limit"] == 7


def test_a_spend_cap_set_at_once_is_one_cap(served: tuple[httpx.Client, Container]) -> None:
    api, container = served
    assert at_once(api, "PUT", "/v1/customers/big/spend-cap", {"amount": 500}) == [200] * 8
    assert count(container, "SELECT count(*) FROM spend_caps") == 1
    cap = api.get("/v1/customers/big/spend-cap").json()["spend_cap"]
    assert cap["amount"] == 500


def test_an_auto_topup_set_at_once_is_one_setting(
    served: tuple[httpx.Client, Container],
) -> None:
    api, container = served
    body = {"below": 100, "pack": "starter"}
    assert at_once(api, "PUT", "/v1/customers/big/auto-topup", body) == [200] * 8
    assert count(container, "SELECT count(*) FROM auto_topups") == 1


def test_other_repeatable_writes_sent_at_once_answer_alike_and_store_once(
    served: tuple[httpx.Client, Container],
) -> None:
    api, container = served
    credits = {"amount": 5, "reason": "welcome", "idempotency_key": "welcome-1"}
    assert at_once(api, "POST", "/v1/customers/tiny/credits", credits) == [200] * 7 + [201]
    alert = {"feature": "runs", "kind": "units", "threshold": 10, "id": "ten-runs"}
    assert all(s < 300 for s in at_once(api, "POST", "/v1/customers/tiny/alerts", alert))
    assert count(container, "SELECT count(*) FROM usage_alerts") == 1
    hold = {"feature": "runs", "quantity": 5, "ttl_seconds": 60, "id": "job-1"}
    assert all(s < 300 for s in at_once(api, "POST", "/v1/customers/tiny/reservations", hold))
    assert count(container, "SELECT count(*) FROM usage_reservations") == 1
    done = "/v1/customers/tiny/reservations/job-1/commit"
    assert at_once(api, "POST", done, {"quantity": 2}) == [200] * 8
    events = [{"id": "e1", "customer": "tiny", "meter": "runs", "value": 1}]
    assert api.post("/v1/usage", json={"events": events}).status_code == 200
    assert at_once(api, "POST", "/v1/usage/void", {"ids": ["e1"], "reason": "test"}) == [200] * 8


def test_removals_and_settings_sent_at_once_answer_alike(
    served: tuple[httpx.Client, Container],
) -> None:
    api, container = served
    allowance = {"allowance": 50}
    assert at_once(api, "PUT", "/v1/customers/tiny/credits/allowance", allowance) == [200] * 8
    assert api.get("/v1/customers/tiny/credits").json()["allowance"] == 50
    assert api.put("/v1/customers/tiny/overrides/runs", json={"limit": 7}).status_code == 200
    removed = at_once(api, "DELETE", "/v1/customers/tiny/overrides/runs", None)
    assert set(removed) <= {204, 404} and 204 in removed
    assert count(container, "SELECT count(*) FROM customer_overrides") == 0
    alert = {"feature": "runs", "kind": "units", "threshold": 10, "id": "ten-runs"}
    assert api.post("/v1/customers/tiny/alerts", json=alert).status_code < 300
    removed = at_once(api, "DELETE", "/v1/customers/tiny/alerts/ten-runs", None)
    assert set(removed) <= {204, 404} and 204 in removed
    assert count(container, "SELECT count(*) FROM usage_alerts") == 0
    key = api.post("/v1/api-keys", json={"name": "frontend", "scope": "read"}).json()
    assert at_once(api, "DELETE", f"/v1/api-keys/{key['id']}", None) == [200] * 8
    assert at_once(api, "POST", "/v1/customers/tiny/billing-session", None) == [200] * 8


def test_a_reservation_released_at_once_is_released_once(
    served: tuple[httpx.Client, Container],
) -> None:
    api, container = served
    hold = {"feature": "runs", "quantity": 5, "ttl_seconds": 60, "id": "job-2"}
    assert api.post("/v1/customers/tiny/reservations", json=hold).status_code < 300
    release = "/v1/customers/tiny/reservations/job-2/release"
    assert at_once(api, "POST", release, None) == [200] * 8
    released = "SELECT count(*) FROM usage_reservations WHERE status = 'released'"
    assert count(container, released) == 1
    runs = api.get("/v1/customers/tiny/entitlements").json()["features"]["runs"]
    assert runs["used"] == 0
