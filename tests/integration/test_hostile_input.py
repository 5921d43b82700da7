"""Issue 18, findings 1, 2 and 12: no input makes a 500 or a half-made customer.

Each test sends what a fuzzer found answered by a plain-text 500 (or left a customer that could
never be read or made again) and checks the answer is a 4xx in the error shape that changed
nothing. Every test runs on SQLite and PostgreSQL (NUL is what PostgreSQL's text refuses).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import TollgateError
from tollgate.metrics import HTTP_REQUESTS
from tollgate.services import customers

SURROGATE = "\ud800"
NUL = "\x00"
WEBHOOK_SECRET = "whsec_tollgate_tests_hostile_0123"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def json_auth(key: str) -> dict[str, str]:
    return {**auth(key), "Content-Type": "application/json"}


def as_json(body: Any) -> dict[str, Any]:
    """The request's JSON as bytes, lone surrogates escaped as JSON allows (`\\ud800`)."""
    return {"content": json.dumps(body).encode()}


def assert_error_shape(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert isinstance(error["type"], str) and isinstance(error["message"], str)
    return error


def count_rows(db: Database) -> dict[str, int]:
    with db.engine.connect() as connection:
        return {
            table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("customers", "credit_accounts", "credit_entries", "api_keys")
        }


# -- finding 1: text no database can store -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"id": "c1", "email": "x@example.com", "metadata": {f"k{SURROGATE}": "v"}},
        {"id": "c1", "email": "x@example.com", "metadata": {"k": f"v{SURROGATE}"}},
        {"id": "c1", "email": "x@example.com", "name": f"Acme{SURROGATE}"},
        {"id": "c1", "email": "x@example.com", "name": f"Acme{NUL}"},
        {"id": "c1", "email": "x@example.com", "address": {"city": f"B{NUL}"}},
    ],
    ids=["metadata-key", "metadata-value", "name-surrogate", "name-nul", "address-nul"],
)
def test_unstorable_text_in_a_create_is_400_and_a_clean_create_then_works(
    api: TestClient, write_key: str, db: Database, body: dict[str, Any]
) -> None:
    before = count_rows(db)
    error = assert_error_shape(
        api.post("/v1/customers", **as_json(body), headers=json_auth(write_key)), 400
    )
    assert error["type"] == "invalid_request_error"
    assert count_rows(db) == before
    assert_error_shape(api.get("/v1/customers/c1", headers=auth(write_key)), 404)
    clean = {"id": "c1", "email": "x@example.com"}
    assert api.post("/v1/customers", json=clean, headers=auth(write_key)).status_code == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/customers/c1", {"name": f"A{SURROGATE}"}),
        ("/v1/customers/c1", {"name": f"A{NUL}"}),
        ("/v1/customers/c1", {"metadata": {NUL: "x"}}),
        ("/v1/customers/c1/credits", {"amount": 5, "reason": f"r{NUL}", "idempotency_key": "k"}),
        ("/v1/api-keys", {"name": f"n{NUL}", "scope": "read"}),
    ],
    ids=["patch-surrogate", "patch-nul", "patch-metadata-key", "credits-reason", "api-key-name"],
)
def test_unstorable_text_in_any_write_is_400_and_changes_nothing(
    api: TestClient, write_key: str, db: Database, path: str, body: dict[str, Any]
) -> None:
    created = api.post(
        "/v1/customers", json={"id": "c1", "email": "x@example.com"}, headers=auth(write_key)
    )
    assert created.status_code == 201
    before = count_rows(db)
    send = api.patch if path == "/v1/customers/c1" else api.post
    assert_error_shape(send(path, **as_json(body), headers=json_auth(write_key)), 400)
    assert count_rows(db) == before
    assert api.get("/v1/customers/c1", headers=auth(write_key)).json() == created.json()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/a%00b",
        "/v1/customers/a%00b/entitlements",
        "/v1/customers/a%00b/entitlements/runs",
        "/v1/customers/a%00b/usage",
        "/v1/customers/a%00b/subscription",
        "/v1/customers/a%00b/credits",
        "/v1/customers/c1/entitlements/runs?quantity=1&x=%00",
    ],
)
def test_nul_in_a_path_is_400_even_with_a_read_key(
    api: TestClient, read_key: str, path: str
) -> None:
    assert_error_shape(api.get(path, headers=auth(read_key)), 400)


def test_usage_with_nul_ids_rejects_only_those_events(api: TestClient, write_key: str) -> None:
    api.post("/v1/customers", json={"id": "c1", "email": "x@example.com"}, headers=auth(write_key))
    events = [
        {"id": f"u{NUL}1", "customer": "c1", "meter": "runs", "value": 1},
        {"id": "u2", "customer": f"c{NUL}1", "meter": "runs", "value": 1},
        {"id": "u3", "customer": "c1", "meter": "runs", "value": 1},
    ]
    answer = api.post("/v1/usage", json={"events": events}, headers=auth(write_key))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["accepted"] == 1
    assert [(r["index"], r["error"]["code"]) for r in report["rejected"]] == [
        (0, "invalid_id"),
        (1, "invalid_customer"),
    ]


def test_usage_timestamps_out_of_range_reject_that_event_not_the_batch(
    api: TestClient, write_key: str
) -> None:
    api.post("/v1/customers", json={"id": "c1", "email": "x@example.com"}, headers=auth(write_key))
    events = [
        {"id": "u1", "customer": "c1", "meter": "runs", "value": 1},
        {"id": "u2", "customer": "c1", "meter": "runs", "value": 1,
         "timestamp": "0001-01-01T00:00:00+01:00"},
        {"id": "u3", "customer": "c1", "meter": "runs", "value": 1,
         "timestamp": "9999-12-31T23:59:59-01:00"},
        {"id": "u4", "customer": "c1", "meter": "runs", "value": 1,
         "timestamp": 10**12},
    ]  # fmt: skip
    answer = api.post("/v1/usage", json={"events": events}, headers=auth(write_key))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["accepted"] == 1
    assert {r["index"]: r["error"]["code"] for r in report["rejected"]} == {
        1: "invalid_timestamp",
        2: "invalid_timestamp",
        3: "invalid_timestamp",
    }


def test_changes_after_beyond_a_bigint_is_400(api: TestClient, read_key: str) -> None:
    answer = api.get("/v1/changes", params={"after": 2**63}, headers=auth(read_key))
    error = assert_error_shape(answer, 400)
    assert error["param"] == "after"
    assert api.get("/v1/changes", params={"after": 2**63 - 1}, headers=auth(read_key)).is_success


# -- finding 1: a create that fails half-way leaves nothing behind ------------------------------


def test_a_create_that_fails_after_its_row_leaves_nothing_that_blocks_a_retry(
    container: Container, db: Database
) -> None:
    # The service called directly (the API refuses this text first): the row is written, then
    # the Stripe SDK cannot encode the metadata, an error that is not Stripe's refusal.
    before = count_rows(db)
    with pytest.raises((UnicodeError, TollgateError, sa.exc.DBAPIError)):
        customers.create_customer(
            container,
            new=customers.NewCustomer(
                id="c1", email="x@example.com", metadata={f"k{SURROGATE}": "v"}
            ),
        )
    assert count_rows(db) == before
    again = customers.create_customer(
        container,
        new=customers.NewCustomer(id="c1", email="y@example.com"),
    )
    assert again.created and again.customer.stripe_customer_id


# -- findings 2 and 12: one handler for the unexpected -----------------------------------------


def test_an_unexpected_error_is_a_500_in_the_error_shape_with_a_request_id_logged_once(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(container)

    @app.get("/v1/explode")
    def explode() -> None:  # a route of this test's own: a bug anywhere behind a route
        raise RuntimeError("a bug")

    caplog.set_level(logging.INFO)
    with TestClient(app) as test_client:
        answer = test_client.get("/v1/explode")
    error = assert_error_shape(answer, 500)
    assert error["type"] == "api_error"
    request_id = error["request_id"]
    assert request_id.startswith("req_") and answer.headers["x-request-id"] == request_id
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and request_id in logged[0].getMessage()


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/customers", "/webhooks/stripe"])
def test_a_client_that_goes_away_is_neither_an_error_nor_a_500(
    db: Database,
    make_settings: Callable[..., Settings],
    write_key: str,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    # JSON logs, so the access log line is written too.
    container = build_container(make_settings(db.url, TOLLGATE_LOG_FORMAT="json"))
    app = create_app(container)
    template = "/v1/customers" if path == "/v1/customers" else path
    server_errors = HTTP_REQUESTS.labels("POST", template, "500")
    errors_before = server_errors._value.get()
    gone = HTTP_REQUESTS.labels("POST", template, "499")
    gone_before = gone._value.get()
    caplog.set_level(logging.INFO)
    # Authorized, so the request reaches the body; the client is gone when it is read.
    scope_headers = [(b"authorization", f"Bearer {write_key}".encode())]

    async def run() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), *scope_headers],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return sent

    try:
        sent = asyncio.run(run())
    finally:
        container.close()
    assert not [m for m in sent if m["type"] == "http.response.start" and m["status"] >= 500]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert server_errors._value.get() == errors_before
    # The metrics and the access log tell the same story: 499, the client went away.
    assert gone._value.get() == gone_before + 1
    (line,) = [r for r in caplog.records if r.name == "tollgate.access"]
    assert line.status == 499  # type: ignore[attr-defined]


# -- finding 2: the unauthenticated webhook route's signature header ----------------------------


def header_bytes(text: str) -> bytes:
    """The header as a client sends it: servers read header bytes as Latin-1, so "²" is 0xB2."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


@pytest.fixture
def webhook_api(db: Database, make_settings: Callable[..., Settings]) -> Any:
    built = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=WEBHOOK_SECRET))
    with TestClient(create_app(built)) as test_client:
        yield test_client
    built.close()


@pytest.mark.parametrize(
    "signature",
    [
        "t=\u00b2,v1=00",
        "t=" + "9" * 5000 + ",v1=00",
        "t=1,v1=" + "a" * 5000,
        "t=\u0661\u0662,v1=00",
        ",".join(["v1=" + "0" * 64] * 400),
    ],
    ids=["superscript-digit", "5000-digits", "long-signature", "arabic-digits", "many-v1"],
)
def test_a_malformed_stripe_signature_is_400_and_stores_nothing(
    webhook_api: TestClient, db: Database, signature: str
) -> None:
    answer = webhook_api.post(
        "/webhooks/stripe",
        content=b'{"id": "evt_1", "object": "event"}',
        headers={"Stripe-Signature": header_bytes(signature)},
    )
    error = assert_error_shape(answer, 400)
    assert error["type"] == "invalid_webhook"
    with db.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM stripe_events")).scalar_one() == 0
