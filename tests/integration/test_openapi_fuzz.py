"""Issue 18, findings 2 and 7: every operation of /openapi.json, called with generated input.

Schemathesis reads the API's own description and, for every operation, generates requests
from it (Hypothesis, a bounded number of examples each, no example database so runs do not
drift). Each answer must not be a 5xx, must have a status, content type and body the
description declares for that operation, and every 4xx must be in the error shape. It runs on
SQLite and PostgreSQL, with a write key and against the simulator, so a route that breaks the
description (or a 500 an input can reach) fails `make test`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

# Examples per operation: ~25 operations, so a few hundred requests a database, about a minute.
EXAMPLES = int(os.environ.get("TOLLGATE_FUZZ_EXAMPLES", "20"))
WEBHOOK_SECRET = "whsec_tollgate_fuzz_0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def check_error_shape(status: int, body: Any) -> None:
    if 400 <= status < 500:
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
        assert isinstance(body["error"].get("type"), str), body
        assert isinstance(body["error"].get("message"), str), body


@pytest.fixture
def fuzzed(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=WEBHOOK_SECRET))
    yield built
    built.close()


def test_every_operation_answers_what_the_description_declares(fuzzed: Container) -> None:
    app = create_app(fuzzed)
    write_key = create_api_key(db=fuzzed.db, clock=fuzzed.clock, name="fuzz", scope="write").secret
    headers = {"Authorization": f"Bearer {write_key}"}
    with TestClient(app) as seed:
        # One customer the generated ids may name, so routes get past 404 too.
        made = seed.post(
            "/v1/customers", json={"id": "acme", "email": "b@acme.example"}, headers=headers
        )
        assert made.status_code == 201, made.text
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            nonlocal calls
            if case.path_parameters and "customer_id" in case.path_parameters and calls % 2:
                case.path_parameters["customer_id"] = "acme"
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # long polls are tested in test_usage_and_entitlements.py
            calls += 1
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)
            body = (
                response.json() if "json" in response.headers.get("content-type", [""])[0] else None
            )
            check_error_shape(response.status_code, body)

        try:
            call()
        except Exception as error:  # collect every operation's first failure, then fail once
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert calls > 100
    assert not failures, "\n\n".join(failures)


def test_the_description_declares_no_phantom_422_and_a_bearer_key(api: TestClient) -> None:
    description = api.get("/openapi.json").json()
    assert description["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": description["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for path, operations in description["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            if path.startswith("/v1/"):
                assert operation["security"] == [{"apiKey": []}], (method, path)
                assert {"400", "401", "429"} <= set(operation["responses"]), (method, path)
    assert "201" in description["paths"]["/v1/customers"]["post"]["responses"]
    assert "201" in description["paths"]["/v1/customers/{customer_id}/credits"]["post"]["responses"]
    metrics = description["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


@pytest.mark.parametrize("path", ["/v1/customers/nobody", "/metrics", "/healthz"])
def test_answers_carry_nosniff_and_json_answers_no_store(
    api: TestClient, read_key: str, path: str
) -> None:
    answer = api.get(path, headers={"Authorization": f"Bearer {read_key}"})
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-request-id"].startswith("req_")
    assert answer.headers["cache-control"] == "no-store"
