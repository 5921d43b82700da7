"""A billing world for end-to-end stories: Tollgate served over HTTP, stripesim sending it webhooks.

Tollgate runs in uvicorn on a free port, exactly as `tollgate serve` would, and the simulator has
webhook endpoints (platform and Connect) pointing at its `/webhooks/stripe`. The mirror moves
only when the simulator's signed events arrive there: `settle()` waits until every queued event
is delivered. The API is called over HTTP with a write key, as an app would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stripe
import uvicorn

from stripesim.testing import RunningSim, free_port
from tests.redis_space import redis_space
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.client import LocalTollgate, Tollgate
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog

SECRET = "whsec_tollgate_e2e_0123456789"
DAY = 86_400
CARD_OK = "4242 4242 4242 4242"
CARD_DECLINED = "4000 0000 0000 0002"


@contextmanager
def serve(container: Container) -> Iterator[str]:
    """Serve Tollgate on a free port in a background thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(container), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tollgate-e2e-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class World:
    """Tollgate over HTTP, the simulator behind it, and the SDK to look at Stripe directly."""

    container: Container
    sim: RunningSim
    stripe: stripe.StripeClient
    base_url: str
    key: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
        )

    @property
    def db(self) -> Database:
        return self.container.db

    # -- the API ---------------------------------------------------------------------------

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = self.http.request(method, path, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def create_customer(self, customer_id: str, expect: int = 201, **fields: Any) -> Any:
        body = {"id": customer_id, "email": f"billing@{customer_id}.example", **fields}
        return self.call("POST", "/v1/customers", expect, json=body)

    def customer(self, customer_id: str) -> Any:
        return self.call("GET", f"/v1/customers/{customer_id}")

    def subscription(self, customer_id: str) -> Any:
        return self.call("GET", f"/v1/customers/{customer_id}/subscription")

    def put_subscription(self, customer_id: str, expect: int = 200, **body: Any) -> Any:
        return self.call("PUT", f"/v1/customers/{customer_id}/subscription", expect, json=body)

    def checkout(self, customer_id: str, expect: int = 200, **body: Any) -> Any:
        body = {
            "success_url": "https://app.example/billing/done",
            "cancel_url": "https://app.example/billing",
            **body,
        }
        return self.call("POST", f"/v1/customers/{customer_id}/checkout", expect, json=body)

    # -- the simulated Stripe --------------------------------------------------------------

    def settle(self) -> None:
        """Wait until every event the simulator queued has reached Tollgate."""
        assert self.sim.webhooks.flush(timeout=30), "webhooks were still pending"

    def pay(self, url: str, card: str = CARD_OK) -> httpx.Response:
        """Fill in and submit the hosted Checkout page as a buyer would."""
        page = httpx.get(url)
        assert page.status_code == 200 and 'name="card_number"' in page.text, page.text
        form = {"card_number": card, "card_expiry": "12 / 34", "card_cvc": "123"}
        return httpx.post(url, data=form, follow_redirects=False)

    def test_clock(self, frozen_time: int) -> str:
        return str(
            self.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen_time}).id
        )

    def advance(self, clock_id: str, to: int) -> None:
        """Move a test clock (in steps Stripe allows), then deliver what it caused."""
        self.stripe.v1.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": to})
        self.settle()

    def invoices(self, stripe_customer_id: str, account: str | None = None) -> list[Any]:
        options: Any = {"stripe_account": account} if account else {}
        listed = self.stripe.v1.invoices.list(
            params={"customer": stripe_customer_id, "limit": 100}, options=options
        )
        return sorted(listed.data, key=lambda invoice: (invoice.created, invoice.id))

    def stripe_count(self, kind: str, account: str | None = None) -> int:
        with self.sim.sim.lock:
            space = self.sim.sim.account(account)
            return len(list(space.all(kind)))


@pytest.fixture
def make_world(
    db: Database, sim: RunningSim, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., World]]:
    """Build the world with extra settings (e.g. TOLLGATE_SEAT_CHANGE_BEHAVIOR)."""
    opened: list[tuple[Container, Any, World]] = []

    def make(**overrides: Any) -> World:
        container = build_container(
            make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET, **overrides)
        )
        sync_catalog(catalog=container.catalog, gateway=container.stripe)
        key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
        served = serve(container)
        base_url = served.__enter__()
        with sim.sim.lock:
            sim.sim.add_webhook_endpoint(f"{base_url}/webhooks/stripe", secret=SECRET)
            sim.sim.add_webhook_endpoint(f"{base_url}/webhooks/stripe", secret=SECRET, connect=True)
        client = stripe.StripeClient(
            "sk_test_e2e_observer", base_addresses={"api": sim.url}, max_network_retries=0
        )
        world = World(container, sim, client, base_url, key.secret)
        opened.append((container, served, world))
        world.settle()
        return world

    yield make
    for container, served, world in opened:
        world.settle()
        world.http.close()
        served.__exit__(None, None, None)
        container.close()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# -- the Python client, over each backend and each way of counting usage ------------------


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def counters(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings that count usage in the database alone, or in Redis before it."""
    if request.param == "database":
        yield {}
        return
    with redis_space() as settings:
        yield settings


@pytest.fixture(params=["http", "local"])
def backend(request: pytest.FixtureRequest) -> str:
    """How the client reaches Tollgate: over HTTP, or in process over its container."""
    return str(request.param)


@contextmanager
def open_client(
    backend: str, container: Container, base_url: str, key: str, **http_options: Any
) -> Iterator[Tollgate | LocalTollgate]:
    """The client over `backend`: the served Tollgate's API, or its container in process."""
    if backend == "http":
        with Tollgate(base_url, key, **http_options) as client:
            yield client
    else:
        with LocalTollgate(container) as client:
            yield client
