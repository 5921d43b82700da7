"""Fixtures for stripesim's own suite (the simulator and SDK client come from tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stripesim.testing import RunningSim, free_port
from tests.stripe_reference import example_keys
from tests.stripesim.allowances import EXTRA_KEYS, MISSING_KEYS


@dataclass
class WebhookSink:
    """A real HTTP endpoint that records what Stripe (the simulator) posts to it."""

    url: str
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    status: int = 200

    def events(self, secret: str) -> list[Any]:
        """Every received delivery, verified and parsed by the SDK as Stripe's docs say to."""
        return [
            stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
            for body, headers in self.received
        ]

    def types(self, secret: str) -> list[str]:
        return [event.type for event in self.events(secret)]


@pytest.fixture(scope="session")
def _sink_server() -> Iterator[WebhookSink]:
    sink = WebhookSink(url="")

    async def receive(request: Request) -> Response:
        sink.received.append((await request.body(), dict(request.headers)))
        return Response(status_code=sink.status)

    app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    sink.url = f"http://127.0.0.1:{port}/hook"
    yield sink
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def webhook_sink(_sink_server: WebhookSink, sim: RunningSim) -> WebhookSink:
    """A sink registered as a webhook endpoint (secret in `sink.secret`), empty at the start."""
    _sink_server.received.clear()
    _sink_server.status = 200
    endpoint = sim.sim.add_webhook_endpoint(_sink_server.url, secret="whsec_test_sink")
    _sink_server.secret = endpoint["secret"]  # type: ignore[attr-defined]
    return _sink_server


def assert_stripe_shape(
    obj: Any, kind: str, *, allow_missing: set[str] | frozenset[str] = frozenset()
) -> None:
    """Check an object's top-level keys against Stripe's example object for `kind`."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    expected = example_keys(kind)
    missing = {
        key for key in expected - set(data) - set(allow_missing) if (kind, key) not in MISSING_KEYS
    }
    extra = {key for key in set(data) - expected if (kind, key) not in EXTRA_KEYS}
    assert not missing, f"{kind} lacks keys Stripe has: {sorted(missing)}"
    assert not extra, f"{kind} has keys Stripe's example lacks: {sorted(extra)}"
