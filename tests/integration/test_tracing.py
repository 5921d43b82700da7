"""Optional OpenTelemetry tracing: with the SDK installed, spans for requests (continuing the
caller's trace), Stripe calls, webhook handling and usage flushes; without it, nothing at all."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import orjson
import pytest
import stripe
from fastapi.testclient import TestClient

from tests.integration.test_webhooks import SECRET, customer_obj, event_obj, new_id
from tollgate import tracing
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key
from tollgate.services.usage import flush_usage

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tollgate's spans, kept in memory by the SDK (the process's global provider untouched)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


def test_requests_stripe_calls_webhooks_and_flushes_have_spans(
    db: Database, make_settings: Callable[..., Settings], spans: InMemorySpanExporter
) -> None:
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET))
    key = create_api_key(db=container.db, clock=container.clock, name="t", scope="write").secret
    try:
        with TestClient(create_app(container)) as api:
            made = api.post(
                "/v1/customers",
                json={"id": "acme", "email": "billing@acme.example"},
                headers={
                    "Authorization": f"Bearer {key}",
                    "traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-01",
                },
            )
            assert made.status_code == 201, made.text
            body = orjson.dumps(event_obj("customer.created", customer_obj(new_id("cus"))))
            signed = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
            delivered = api.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": signed}
            )
            assert delivered.status_code == 200, delivered.text
        flush_usage(db=container.db, catalog=container.catalog, clock=container.clock)
    finally:
        container.close()

    finished = {span.name: span for span in spans.get_finished_spans()}
    request = finished["POST /v1/customers"]
    assert request.kind is trace.SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 201
    assert str(request.attributes["tollgate.request_id"]).startswith("req_")
    assert format(request.context.trace_id, "032x") == CALLER_TRACE  # the caller's trace goes on
    stripe_call = next(span for name, span in finished.items() if name.startswith("stripe "))
    assert stripe_call.parent is not None  # inside the request's trace
    assert stripe_call.context.trace_id == request.context.trace_id
    assert "webhook customer.created" in finished
    assert any(
        span.attributes and span.attributes.get("url.path") == "/webhooks/stripe"
        for span in finished.values()
    ), sorted(finished)
    assert "usage flush" in finished
    assert all("sk_test" not in str(span.attributes) for span in finished.values())


def test_without_the_sdk_nothing_is_traced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = f"""
import sys
sys.modules["opentelemetry.sdk"] = None  # as if the extra were not installed
from fastapi.testclient import TestClient
from tollgate import tracing
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import load_settings
assert not tracing.tracing() and not tracing.configure_tracing()
assert tracing.span("anything") is tracing.span("else")  # the shared no-op
container = build_container(load_settings(
    TOLLGATE_ENV="test", TOLLGATE_DATABASE_URL="sqlite:///{tmp_path}/t.db"))
with TestClient(create_app(container)) as api:
    assert api.get("/healthz").status_code == 200
container.close()
print("untraced")
"""
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "untraced"
