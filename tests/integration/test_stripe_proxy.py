"""Stripe calls go through the proxy the environment names (read once, when the client is made).

The proxy here is a small forwarding HTTP proxy of the test's own: it records each request line
(a proxied request names the whole URL) and passes the request on to the simulator.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tollgate.config import Settings
from tollgate.stripe.errors import StripeUnavailable
from tollgate.stripe.gateway import StripeGateway


class _Forwarding(BaseHTTPRequestHandler):
    seen: list[str]
    credentials: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.credentials.append(self.headers.get("Proxy-Authorization"))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        pass_back(self, httpx.get(self.path, headers=headers))

    def log_message(self, format: str, *args: object) -> None:
        pass


def pass_back(handler: BaseHTTPRequestHandler, answer: httpx.Response) -> None:
    """Answer the handler's request with what the simulator answered (status, the headers the
    SDK reads, body)."""
    handler.send_response(answer.status_code)
    for name in ("content-type", "date", "request-id"):
        if name in answer.headers:
            handler.send_header(name, answer.headers[name])
    handler.send_header("content-length", str(len(answer.content)))
    handler.end_headers()
    handler.wfile.write(answer.content)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server of `handler` on a free loopback port, in a thread; yields its address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def forwarding_proxy(
    credentials: list[str | None] | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """A proxy recording each request line (and its Proxy-Authorization in `credentials`)."""
    seen: list[str] = []
    attributes = {"seen": seen, "credentials": [] if credentials is None else credentials}
    with serving(type("Handler", (_Forwarding,), attributes)) as url:
        yield url, seen


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


def test_a_proxys_credentials_go_in_proxy_authorization(
    clean_proxy_env: pytest.MonkeyPatch,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    customer = client.v1.customers.create(params={"name": "Proxied"})
    credentials: list[str | None] = []
    with forwarding_proxy(credentials) as (proxy_url, seen):
        clean_proxy_env.setenv("HTTP_PROXY", proxy_url.replace("://", "://ops:p%40ss@"))
        gateway = StripeGateway.from_settings(make_settings("sqlite://"))
        clean_proxy_env.delenv("HTTP_PROXY")  # the proxy's own requests go direct
        assert gateway.retrieve_customer(customer.id)["name"] == "Proxied"
    assert len(seen) == 1
    assert credentials == ["Basic " + base64.b64encode(b"ops:p@ss").decode()]


class _DropsFirst(BaseHTTPRequestHandler):
    """Stripe's address whose first connection is closed without an answer; then the simulator."""

    sim_url: str
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if len(self.seen) == 1:
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        answer = httpx.get(self.sim_url + self.path, headers=headers)
        self.send_response(answer.status_code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_dropped_connection_is_retried_and_a_refused_one_is_unavailable(
    sim: RunningSim, client: stripe.StripeClient, make_settings: Callable[..., Settings]
) -> None:
    customer = client.v1.customers.create(params={"name": "Retried"})
    seen: list[str] = []
    with serving(type("Handler", (_DropsFirst,), {"sim_url": sim.url, "seen": seen})) as base:
        settings = make_settings("sqlite://", STRIPE_API_BASE=base, STRIPE_MAX_RETRIES=1)
        assert StripeGateway.from_settings(settings).retrieve_customer(customer.id)["id"]
    assert seen == [f"/v1/customers/{customer.id}"] * 2
    refused = make_settings("sqlite://", STRIPE_API_BASE="http://127.0.0.1:9", STRIPE_MAX_RETRIES=1)
    with pytest.raises(StripeUnavailable, match="could not be reached"):
        StripeGateway.from_settings(refused).retrieve_customer(customer.id)
