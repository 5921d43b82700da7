"""Optional OpenTelemetry tracing: spans for requests, webhook handling, usage flushes and Stripe
calls when `opentelemetry-api` is installed (`pip install 'tollgate[otel]'`), nothing otherwise.

Spans go to whatever tracer provider the process has. `configure_tracing` sets one up when the
SDK is installed and none was set: spans are exported over OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and the OTLP
exporter package is installed; the standard `OTEL_*` variables (service name, sampler) apply.
Without the packages `span` is a shared no-op and the request middleware
(`tollgate.api.tracing`) is not added: nothing is paid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the optional extra is not installed
    trace = None  # type: ignore[assignment]

ENABLED = trace is not None
TRACER_NAME = "tollgate"
_NOTHING: AbstractContextManager[None] = nullcontext()
_configured = False


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """Return a context manager that records a span (the current one's child), or does nothing
    when OpenTelemetry is not installed. An exception leaving it is recorded on the span."""
    if trace is None:
        return _NOTHING
    return trace.get_tracer(TRACER_NAME).start_as_current_span(
        name, attributes=dict(attributes) if attributes else None
    )


def configure_tracing() -> bool:
    """Give the process a tracer provider exporting over OTLP when the SDK is installed, none is
    set yet and an OTLP endpoint is configured; return whether one was set up here."""
    global _configured
    if trace is None or _configured:
        return False
    _configured = True
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # the host application set its own
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tollgate")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
