"""An object read back from Stripe (a webhook's fetch) is a plain GET on the SDK's HTTP client.

Stripe's address here is a small front of the test's own: it records each request (path and
headers) and answers the first ones it is told to with an error of its own, then passes
requests on to the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import stripe

from stripesim.testing import RunningSim
from tests.integration.test_stripe_proxy import serving
from tollgate.config import Settings
from tollgate.stripe.errors import StripeFailure, StripeNotFound
from tollgate.stripe.gateway import PINNED_API_VERSION, StripeGateway


class _Front(BaseHTTPRequestHandler):
    sim_url: str
    seen: list[tuple[str, dict[str, str]]]
    errors: list[int]  # statuses to answer first, one request each

    def do_GET(self) -> None:
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.errors:
            status = self.errors.pop(0)
            body = b'{"error": {"type": "api_error", "message": "the front says no"}}'
        else:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
            }
            answer = httpx.get(self.sim_url + self.path, headers=headers)
            status, body = answer.status_code, answer.content
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def front(
    sim: RunningSim, errors: list[int] | None = None
) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """Stripe's address in front of the simulator; yields it and the requests it saw."""
    seen: list[tuple[str, dict[str, str]]] = []
    attributes = {"sim_url": sim.url, "seen": seen, "errors": list(errors or [])}
    with serving(type("Front", (_Front,), attributes)) as url:
        yield url, seen


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_an_object_read_back_is_one_get_with_the_key_and_pinned_version(
    sim: RunningSim,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    customer = client.v1.customers.create(params={"name": "Read back"})
    with front(sim) as (url, seen):
        gateway = StripeGateway.from_settings(make_settings("sqlite://", STRIPE_API_BASE=url))
        current = gateway.retrieve_current("customer", customer.id)
    assert current.value == client.v1.customers.retrieve(customer.id).to_dict(for_json=True)
    assert current.stripe_time is not None  # the Date header, read from the plain answer
    assert [path for path, _ in seen] == [f"/v1/customers/{customer.id}"]
    headers = seen[0][1]
    assert headers["authorization"] == "Bearer sk_test_tollgate_tests"
    assert headers["stripe-version"] == PINNED_API_VERSION
    assert headers["user-agent"].startswith("Stripe/v1 PythonBindings/")
    assert "stripe-account" not in headers


def test_a_connected_accounts_object_is_read_with_its_account_header(
    sim: RunningSim, make_settings: Callable[..., Settings]
) -> None:
    with front(sim) as (url, seen):
        gateway = StripeGateway.from_settings(make_settings("sqlite://", STRIPE_API_BASE=url))
        with pytest.raises(StripeFailure):  # no such account here: refused
            gateway.for_account("acct_connected1").retrieve_current("customer", "cus_missing")
        with pytest.raises(StripeNotFound):
            gateway.retrieve_current("customer", "cus_missing")
    accounts = [headers.get("stripe-account") for _, headers in seen]
    # Each read twice: plainly, then (refused, not found) through the SDK, which raises.
    assert accounts == ["acct_connected1", "acct_connected1", None, None]


def test_a_read_answered_otherwise_than_200_goes_through_the_sdks_retries(
    sim: RunningSim,
    client: stripe.StripeClient,
    make_settings: Callable[..., Settings],
) -> None:
    customer = client.v1.customers.create(params={"name": "Retried"})
    # The plain GET meets a 500, the SDK's request another (retried by the SDK), then the object.
    with front(sim, errors=[500, 500]) as (url, seen):
        gateway = StripeGateway.from_settings(make_settings("sqlite://", STRIPE_API_BASE=url))
        assert gateway.retrieve_customer(customer.id)["name"] == "Retried"
    assert len(seen) == 3
