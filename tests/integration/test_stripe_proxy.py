"""Stripe calls go through the proxy the environment names (read once, when the client is made).

The proxy here is a small forwarding HTTP proxy of the test's own: it records each request line
(a proxied request names the whole URL) and passes the request on to the simulator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe

from tollgate.config import Settings
from tollgate.stripe.gateway import StripeGateway


class _Forwarding(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        answer = httpx.get(self.path, headers=headers)
        self.send_response(answer.status_code)
        for name in ("content-type", "date", "request-id"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def forwarding_proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Forwarding,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_stripe_calls_go_through_the_environments_proxy(
    clean_proxy_env: pytest.MonkeyPatch,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    customer = client.v1.customers.create(params={"name": "Proxied"})
    with forwarding_proxy() as (proxy_url, seen):
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
        gateway = StripeGateway.from_settings(make_settings("sqlite://"))
        clean_proxy_env.delenv("HTTP_PROXY")  # read once, when the client was made
        assert gateway.retrieve_customer(customer.id)["name"] == "Proxied"
        assert gateway.retrieve_customer(customer.id)["name"] == "Proxied"
    assert len(seen) == 2
    assert all(line.startswith("GET http://") for line in seen)
    assert seen[0].endswith(f"/v1/customers/{customer.id}")


def test_an_address_the_environment_exempts_is_reached_directly(
    clean_proxy_env: pytest.MonkeyPatch,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    customer = client.v1.customers.create(params={"name": "Direct"})
    with forwarding_proxy() as (proxy_url, seen):
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url)
        clean_proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
        gateway = StripeGateway.from_settings(make_settings("sqlite://"))
        assert gateway.retrieve_customer(customer.id)["name"] == "Direct"
    assert seen == []
