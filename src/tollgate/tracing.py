"""Optional OpenTelemetry tracing: spans for requests, webhook handling, usage flushes and Stripe
calls once a tracer provider is configured (`pip install 'tollgate[otel]'` brings the SDK and
the OTLP exporter), nothing otherwise.

Request spans are FastAPI's own (its native telemetry wraps the whole middleware stack, the
fast paths included, and continues the caller's `traceparent`); Tollgate adds its request id to
them and its own spans inside. `configure_tracing` gives the process a provider exporting over
OTLP when the SDK is installed, none is set and `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is; a host application may set its own instead, globally
or with `use_tracer_provider`. Until a provider is configured `span` is a shared no-op: the
OpenTelemetry API alone (a FastAPI dependency) records nothing and costs next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

try:
    from opentelemetry import trace
except ImportError:  # an older FastAPI without the OpenTelemetry API
    trace = None  # type: ignore[assignment]

TRACER_NAME = "tollgate"
_NOTHING: AbstractContextManager[None] = nullcontext()
_provider: Any = None  # given by use_tracer_provider, else the global one
_tracer: Any = trace.get_tracer(TRACER_NAME) if trace is not None else None
_configured = False


def use_tracer_provider(provider: Any | None) -> None:
    """Trace with `provider` instead of the global one (None: the global one again), for a
    host application that keeps its own, or a test. Apps made afterwards use it too."""
    global _provider, _tracer
    if trace is not None:
        _provider = provider
        _tracer = trace.get_tracer(TRACER_NAME, tracer_provider=provider)


def tracing() -> bool:
    """Return whether spans are recorded: a tracer provider is configured."""
    if trace is None:
        return False
    return _provider is not None or not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """Return a context manager that records a span (the current one's child), or a shared
    no-op while no tracer provider is configured. An exception leaving it is recorded."""
    if not tracing():
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=dict(attributes) if attributes else None)


def fastapi_telemetry() -> TelemetryConfig:
    """Return FastAPI's telemetry settings: its request spans on Tollgate's provider when one is
    configured as the app is made, and nothing else.

    Off, FastAPI skips its telemetry layer outright; on by default, it asks the OpenTelemetry API
    for three global providers (each reading the environment) on every request even when none is
    configured, which cost an entitlement check about a tenth of its time. Tollgate's metrics are
    Prometheus's and its logs its own, so FastAPI's OpenTelemetry metrics and logs stay off; a
    host application that configures tracing does so before it makes the app.
    """
    if _provider is not None:
        return {"tracer_provider": _provider, "metrics": False, "logs": False}
    return {"tracing": tracing(), "metrics": False, "logs": False}


def note_request_id(request_id: str) -> None:
    """Put Tollgate's request id on the request's span (FastAPI's), when one is recorded."""
    if trace is not None and tracing():
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attribute("tollgate.request_id", request_id)


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
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    if tracing():
        return False  # the host application set its own
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tollgate")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
