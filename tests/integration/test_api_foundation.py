"""The API foundation: health, readiness, metrics, OpenAPI, key scopes, error shape, limits."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.db.migrate import downgrade
from tollgate.db.models import ApiKey


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_healthz_and_openapi_answer_without_a_key(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    spec = api.get("/openapi.json").json()
    assert spec["info"]["title"] == "Tollgate"
    assert "/v1/catalog" in spec["paths"]


def test_readyz_is_ready_on_a_migrated_database(api: TestClient) -> None:
    answer = api.get("/readyz")
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"database": "ok", "migrations": "ok"}


def test_readyz_is_not_ready_when_migrations_are_behind(
    container: Container, make_settings
) -> None:  # type: ignore[no-untyped-def]
    downgrade(container.db.url, "base")
    behind = build_container(make_settings(container.db.url))
    with TestClient(create_app(behind)) as api:
        answer = api.get("/readyz")
    behind.close()
    assert answer.status_code == 503
    assert answer.json()["status"] == "not_ready"
    assert "newest is" in answer.json()["checks"]["migrations"]


def test_metrics_count_requests_by_route(api: TestClient, read_key: str) -> None:
    api.get("/v1/catalog", headers=_auth(read_key))
    text = api.get("/metrics").text
    assert 'tollgate_http_requests_total{method="GET",route="/v1/catalog",status="200"}' in text


def test_missing_key_is_401_in_the_error_shape(api: TestClient) -> None:
    answer = api.get("/v1/catalog")
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    assert "Bearer" in answer.json()["error"]["message"]


def test_unknown_key_is_401(api: TestClient) -> None:
    answer = api.get("/v1/catalog", headers=_auth("tg_write_not-a-real-key"))
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "the API key is not valid (unknown or revoked)"


def test_read_key_reads_but_cannot_write(api: TestClient, read_key: str) -> None:
    assert api.get("/v1/catalog", headers=_auth(read_key)).status_code == 200
    answer = api.post("/v1/api-keys", headers=_auth(read_key), json={"name": "x", "scope": "read"})
    assert answer.status_code == 403
    assert answer.json()["error"] == {
        "type": "permission_error",
        "message": "this API key has scope 'read'; this route needs 'write'",
    }


def test_write_key_mints_a_key_that_works_and_is_stored_hashed(
    api: TestClient, write_key: str, container: Container
) -> None:
    answer = api.post(
        "/v1/api-keys", headers=_auth(write_key), json={"name": "frontend", "scope": "read"}
    )
    assert answer.status_code == 201
    secret = answer.json()["secret"]
    assert api.get("/v1/catalog", headers=_auth(secret)).status_code == 200
    with container.db.transaction() as session:
        rows = session.scalars(sa.select(ApiKey)).all()
    assert all(secret not in (row.secret_hash, row.prefix) for row in rows)
    assert any(len(row.secret_hash) == 64 for row in rows)


def test_bootstrap_keys_from_settings_work(db, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(db.url, TOLLGATE_API_KEYS="web:read:0123456789abcdef0123")
    with_env_key = build_container(settings)
    with TestClient(create_app(with_env_key)) as api:
        assert api.get("/v1/catalog", headers=_auth("0123456789abcdef0123")).status_code == 200
    with_env_key.close()


def test_catalog_lists_plans_with_money_fields(api: TestClient, read_key: str) -> None:
    catalog = api.get("/v1/catalog", headers=_auth(read_key)).json()
    plans = {plan["id"]: plan for plan in catalog["plans"]}
    assert set(plans) == {"free", "pro", "enterprise", "team"}
    assert {"interval": "month", "amount": 2900, "currency": "usd"} in plans["pro"]["prices"]
    assert catalog["default_plan"] == "free"


def test_bad_body_is_400_and_changes_nothing(
    api: TestClient, write_key: str, container: Container
) -> None:
    answer = api.post(
        "/v1/api-keys",
        headers={**_auth(write_key), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "the request body is not valid JSON"
    answer = api.post(
        "/v1/api-keys", headers=_auth(write_key), json={"name": "x", "scope": "admin"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "scope"
    with container.db.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 1  # the write key


def test_body_over_one_mebibyte_is_413(api: TestClient, write_key: str) -> None:
    answer = api.post(
        "/v1/api-keys",
        headers={**_auth(write_key), "Content-Type": "application/json"},
        content=b"x" * (1024 * 1024 + 1),
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "request_too_large"


def test_unknown_route_is_404_json(api: TestClient) -> None:
    answer = api.get("/v1/nothing-here")
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found"
