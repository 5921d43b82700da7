"""Issue 18, finding 8: rate limits with Retry-After, safe headers, /metrics behind a token."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tollgate.api.app import create_app
from tollgate.api.guard import Guard, safe_json_headers
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.logs import current_request_id
from tollgate.services.api_keys import create_api_key

METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def limited(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(
        make_settings(
            db.url,
            TOLLGATE_RATE_LIMIT_PER_KEY=5,
            TOLLGATE_RATE_LIMIT_PER_ADDRESS=3,
            TOLLGATE_METRICS_TOKEN=METRICS_TOKEN,
        )
    )
    yield built
    built.close()


def test_a_key_over_its_allowance_gets_429_with_retry_after_and_other_keys_do_not(
    limited: Container,
) -> None:
    first = create_api_key(db=limited.db, clock=limited.clock, name="a", scope="read").secret
    second = create_api_key(db=limited.db, clock=limited.clock, name="b", scope="read").secret
    with TestClient(create_app(limited)) as api:
        # The first request of a key is counted by address (3), then by key (5).
        statuses = [
            api.get("/v1/catalog", headers={"Authorization": f"Bearer {first}"}).status_code
            for _ in range(7)
        ]
        assert statuses == [200] * 6 + [429]
        refused = api.get("/v1/catalog", headers={"Authorization": f"Bearer {first}"})
        assert refused.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert api.get("/v1/catalog", headers={"Authorization": f"Bearer {second}"}).is_success


def test_guessing_keys_is_limited_per_address(limited: Container) -> None:
    with TestClient(create_app(limited)) as api:
        statuses = [
            api.get("/v1/catalog", headers={"Authorization": f"Bearer guess{n}"}).status_code
            for n in range(5)
        ]
    assert statuses == [401, 401, 401, 429, 429]


def test_public_routes_are_limited_per_address(limited: Container) -> None:
    with TestClient(create_app(limited)) as api:
        statuses = [api.get("/healthz").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_metrics_needs_the_token_when_one_is_set(limited: Container) -> None:
    with TestClient(create_app(limited)) as api:
        refused = api.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["type"]
        wrong = api.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        scraped = api.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert "tollgate_http_requests_total" in scraped.text


def test_a_new_api_keys_secret_is_answered_no_store_and_nosniff(
    api: TestClient, write_key: str
) -> None:
    answer = api.post(
        "/v1/api-keys",
        json={"name": "frontend", "scope": "read"},
        headers={"Authorization": f"Bearer {write_key}"},
    )
    assert answer.status_code == 201 and answer.json()["secret"]
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_a_fast_path_check_carries_each_safe_header_once_as_the_route_does(
    limited: Container,
) -> None:
    key = create_api_key(db=limited.db, clock=limited.clock, name="w", scope="write").secret
    auth = {"Authorization": f"Bearer {key}"}
    check = "/v1/customers/acme/entitlements/runs?quantity=1"
    safe = {
        "content-type",
        "x-request-id",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
        "content-security-policy",
    }
    with (
        TestClient(create_app(limited)) as fast,
        TestClient(create_app(limited, fast_paths=False)) as routes,
    ):
        body = {"id": "acme", "email": "b@acme.example", "offline": True}
        assert fast.post("/v1/customers", json=body, headers=auth).status_code == 201
        answers = [
            client.get(check, headers={**auth, "X-Request-Id": "lb-7f3a9c2e-0002"})
            for client in (fast, routes)
        ]
        fresh = fast.get(check, headers=auth)
    seen = [
        sorted((name, value) for name, value in answer.headers.multi_items() if name in safe)
        for answer in answers
    ]
    assert seen[0] == seen[1] and len(seen[0]) == len(safe)
    assert ("x-request-id", "lb-7f3a9c2e-0002") in seen[0]
    names = [name for name, _ in fresh.headers.multi_items()]
    assert fresh.headers["x-request-id"].startswith("req_") and names.count("x-request-id") == 1


async def _copying_safe_headers(scope: Scope, receive: Receive, send: Send) -> None:
    """A layer inside the Guard that answers with its headers copied into a plain list."""
    request_id = current_request_id()
    assert request_id is not None
    headers = list(safe_json_headers(2, request_id))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def test_safe_headers_copied_into_a_plain_list_are_not_added_twice() -> None:
    answer = TestClient(Guard(_copying_safe_headers)).get("/", headers={"X-Request-Id": "lb-0003a"})
    names = [name for name, _ in answer.headers.multi_items()]
    assert answer.headers["x-request-id"] == "lb-0003a" and names.count("x-request-id") == 1
    assert len(names) == len(set(names))
    assert answer.headers["cache-control"] == "no-store"
