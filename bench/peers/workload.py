"""The events every peer gets, made by stripesim, and the load generator that delivers them.

stripesim (a subprocess) holds real objects: a Pro product and price, `--customers` customers
and a `send_invoice` subscription each. Their `customer.created` and
`customer.subscription.created` events seed every peer. Then two workloads of updates are made
in stripesim, each object changed round after round and, last, twice in a row (two updates in
the same second, whose order the `created` timestamps cannot tell):

- `customers`: `customer.updated`, a new name each time;
- `subscriptions`: `customer.subscription.updated`, other seats (the item's quantity) each time.

stripesim's own events, in the order it made them, are the deliveries; every tenth is delivered
again a round later (a duplicate arriving after a newer event). So stripesim's final objects are
what every peer must hold at the end, however it gets there (from the payload, or by asking
stripesim, as dj-stripe does).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import stripe

BENCH = Path(__file__).resolve().parent.parent
# bench/stripesim.py is named like the simulator's package: keep bench/ off the import path.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

_spec = importlib.util.spec_from_file_location("bench_harness", BENCH / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
webhooks = harness.load("webhooks")  # its signing secret, signature and keep-alive connection

SECRET: str = webhooks.SECRET
STRIPE_KEY = "sk_test_peersbench0123456789abcdefABCDEF"
DUPLICATE_EVERY = 10


@dataclass
class Workload:
    """One kind of update, delivered in stripesim's order, and what it must leave behind."""

    name: str
    event_type: str
    deliveries: list[bytes]
    event_ids: set[str]
    # Object id -> its final value in stripesim (a customer's name, a subscription's seats).
    expected: dict[str, Any]
    # Objects whose last two updates have the same `created` second.
    same_second: set[str] = field(default_factory=set)


@dataclass
class Events:
    seeds: list[bytes]
    workloads: list[Workload]


@contextmanager
def stripesim() -> Iterator[tuple[int, int]]:
    """`stripesim serve` in a subprocess on a free port: yields its port and pid."""
    port = harness.free_port()
    argv = [sys.executable, "-m", "stripesim.cli", "serve", "--port", str(port)]
    auth = {"Authorization": f"Bearer {STRIPE_KEY}"}
    url = f"http://127.0.0.1:{port}/v1/account"
    with harness.serving(argv, dict(os.environ), url, name="stripesim", headers=auth) as pid:
        yield port, pid


def _events(http: httpx.Client, event_type: str) -> list[dict[str, Any]]:
    """Every event of `event_type` stripesim made, oldest first (it lists newest first)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"type": event_type, "limit": 100}
    while True:
        page = http.get("/v1/events", params=params).raise_for_status().json()
        found.extend(page["data"])
        if not page["has_more"]:
            return found[::-1]
        params["starting_after"] = page["data"][-1]["id"]


def subscribed_customers(
    client: stripe.StripeClient, customers: int, pool: ThreadPoolExecutor
) -> list[tuple[str, str, str]]:
    """Make a Pro price and `customers` customers with a `send_invoice` subscription each in
    stripesim; return each one's customer, subscription and subscription item ids."""
    product = client.v1.products.create(params={"name": "Pro"})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "metadata": {"tollgate_plan": "pro", "tollgate_interval": "month"},
        }
    )

    def subscribe(index: int) -> tuple[str, str, str]:
        customer = client.v1.customers.create(
            params={
                "email": f"org{index}@peers.example",
                "name": f"Org {index}",
                "metadata": {"tollgate_customer_id": f"org-{index}"},
            }
        )
        subscription = client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "collection_method": "send_invoice",
                "days_until_due": 30,
            }
        )
        return customer.id, subscription.id, subscription["items"].data[0].id

    # Objects apart in threads (stripesim keeps their order).
    return list(pool.map(subscribe, range(customers)))


def make_events(port: int, customers: int, rounds: int) -> Events:
    """Make the objects and their updates in stripesim; return the seeds and the workloads."""
    base = f"http://127.0.0.1:{port}"
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": base}, max_network_retries=0)
    # Objects apart in threads, one object's changes in turn.
    pool = ThreadPoolExecutor(8)
    objects = subscribed_customers(client, customers, pool)

    def rename(index: int, version: int) -> None:
        name = f"Org {index} v{version}"
        client.v1.customers.update(objects[index][0], params={"name": name})

    def reseat(index: int, version: int) -> None:
        _, subscription, item = objects[index]
        client.v1.subscriptions.update(
            subscription,
            params={
                "items": [{"id": item, "quantity": 2 + version}],
                "proration_behavior": "none",
            },
        )

    def twice(change: Callable[[int, int], None], index: int) -> None:
        change(index, rounds)  # and at once again: the same second
        change(index, rounds + 1)

    for change in (rename, reseat):
        for version in range(rounds):
            list(pool.map(lambda index: change(index, version), range(customers)))  # noqa: B023
        list(pool.map(lambda index: twice(change, index), range(customers)))  # noqa: B023
    pool.shutdown()

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as http:
        seeds = [
            orjson.dumps(event)
            for kind in ("customer.created", "customer.subscription.created")
            for event in _events(http, kind)
        ]
        names = {cus: http.get(f"/v1/customers/{cus}").json()["name"] for cus, _, _ in objects}
        seats = {
            sub: http.get(f"/v1/subscriptions/{sub}").json()["items"]["data"][0]["quantity"]
            for _, sub, _ in objects
        }
        workloads = [
            _workload("customers", _events(http, "customer.updated"), names),
            _workload("subscriptions", _events(http, "customer.subscription.updated"), seats),
        ]
    return Events(seeds, workloads)


def _value(event: dict[str, Any]) -> Any:
    obj = event["data"]["object"]
    if obj["object"] == "customer":
        return obj["name"]
    return obj["items"]["data"][0]["quantity"]


def _workload(name: str, events: list[dict[str, Any]], expected: dict[str, Any]) -> Workload:
    by_object: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_object.setdefault(event["data"]["object"]["id"], []).append(event)
    for object_id, updates in by_object.items():
        if _value(updates[-1]) != expected[object_id]:
            raise RuntimeError(f"{object_id}: stripesim's last event is not its final state")
    same_second = {
        object_id
        for object_id, updates in by_object.items()
        if updates[-1]["created"] == updates[-2]["created"]
    }
    bodies = [orjson.dumps(event) for event in events]
    deliveries: list[bytes] = []
    later: dict[int, list[bytes]] = {}
    lag = len(by_object)  # about one round later
    for position, body in enumerate(bodies):
        deliveries.append(body)
        deliveries.extend(later.pop(position, []))
        if position % DUPLICATE_EVERY == 0:
            later.setdefault(min(position + lag, len(bodies) - 1), []).append(body)
    return Workload(
        name,
        events[0]["type"],
        deliveries,
        {event["id"] for event in events},
        expected,
        same_second,
    )


@dataclass
class Delivered:
    latencies: list[float]
    failed: list[bytes]  # answered other than 2xx
    elapsed: float


class _Connection(webhooks._Connection):
    """webhooks.py's keep-alive connection, opened again when the server closes it."""

    port: int

    async def send(self, path: str, body: bytes) -> int:
        for attempt in range(2):
            try:
                return int(await self.post(path, body))
            except (ConnectionError, asyncio.IncompleteReadError, IndexError):
                self.close()
                if attempt:
                    raise
                fresh = await webhooks._Connection.open(self.port)
                self.reader, self.writer = fresh.reader, fresh.writer
        raise AssertionError("unreachable")


async def _deliver(port: int, path: str, bodies: list[bytes], concurrency: int) -> Delivered:
    latencies: list[float] = []
    failed: list[bytes] = []
    queue = iter(bodies)

    async def worker() -> None:
        opened = await webhooks._Connection.open(port)
        connection = _Connection(opened.reader, opened.writer)
        connection.port = port
        try:
            for body in queue:
                started = time.perf_counter()
                status = await connection.send(path, body)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    failed.append(body)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Delivered(latencies, failed, time.perf_counter() - started)


def deliver(port: int, path: str, bodies: list[bytes], concurrency: int) -> Delivered:
    """POST every body, signed, keeping `concurrency` deliveries in flight, in list order."""
    return asyncio.run(_deliver(port, path, bodies, concurrency))


def redeliver(port: int, path: str, bodies: list[bytes], tries: int = 3) -> list[bytes]:
    """Deliver failed bodies again, one at a time, as Stripe retries; return what still fails."""
    for _ in range(tries):
        if not bodies:
            break
        time.sleep(1)
        bodies = deliver(port, path, bodies, 1).failed
    return bodies
