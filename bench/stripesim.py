"""Measure stripesim's request rate (in process and over HTTP) and how its lists scale.

Run: `.venv/bin/python bench/stripesim.py [--seconds 3] [--concurrency 50] [--threads 8]`;
`--lists-only` measures only list and search calls at 1,000 and 100,000 stored objects.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# This script is named like the package it measures: keep its own folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import orjson  # noqa: E402
import stripe  # noqa: E402

from stripesim.app import create_app  # noqa: E402
from stripesim.billing import engine_ctx  # noqa: E402
from stripesim.state import Simulator  # noqa: E402
from stripesim.testing import free_port  # noqa: E402

HEADERS = {"Authorization": "Bearer sk_test_bench"}


async def _rate(
    name: str, make: Callable[[int], Awaitable[httpx.Response]], seconds: float, concurrency: int
) -> float:
    """Run `make(n)` from `concurrency` workers for `seconds`; print and return requests/s."""
    done = 0
    failures = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, failures
        while time.perf_counter() < stop:
            response = await make(done)
            if response.status_code != 200:
                failures += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    note = f" ({failures} failed)" if failures else ""
    print(f"{name}: {rate:,.0f} req/s{note}", flush=True)
    return rate


async def in_process(seconds: float, concurrency: int) -> dict[str, float]:
    """Requests through the ASGI app directly: no sockets, the simulator's own cost."""
    sim = Simulator(deliver_webhooks=False)
    app = create_app(sim, deliver_webhooks=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://stripesim", headers=HEADERS
    ) as client:
        customer = (await client.post("/v1/customers", data={"email": "bench@example.com"})).json()
        path = f"/v1/customers/{customer['id']}"
        results = {
            "retrieve": await _rate(
                "in-process customer retrieve", lambda n: client.get(path), seconds, concurrency
            ),
            "create": await _rate(
                "in-process customer create",
                lambda n: client.post("/v1/customers", data={"email": f"b{n}@example.com"}),
                seconds,
                concurrency,
            ),
        }
        results["list"] = await _rate(
            "in-process customer list (limit 10)",
            lambda n: client.get("/v1/customers", params={"limit": 10}),
            seconds,
            concurrency,
        )
    return results


async def raw_asgi(seconds: float) -> dict[str, float]:
    """The app called as ASGI with no HTTP client at all: the simulator's cost alone."""
    sim = Simulator(deliver_webhooks=False)
    app = create_app(sim, deliver_webhooks=False)

    async def call(method: str, path: str, body: bytes = b"") -> bytes:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"stripesim"),
                (b"authorization", b"Bearer sk_test_bench"),
                (b"content-type", b"application/x-www-form-urlencoded"),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("stripesim", 80),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[-1]["body"]  # type: ignore[return-value]

    customer_id = orjson.loads(await call("POST", "/v1/customers", b"email=a%40b"))["id"]
    results = {}
    for name, args in (
        ("retrieve", ("GET", f"/v1/customers/{customer_id}")),
        ("create", ("POST", "/v1/customers", b"email=bench%40example.com")),
    ):
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await call(*args)  # type: ignore[arg-type]
            done += 1
        results[name] = done / (time.perf_counter() - started)
        print(f"in-process customer {name}, raw ASGI (no client): {results[name]:,.0f} req/s")
    return results


def over_http(seconds: float, threads: int) -> dict[str, float]:
    """The official SDK from several threads against `stripesim serve` in its own process."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stripesim.cli", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/v1/customers", headers=HEADERS, timeout=0.5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("stripesim serve did not start") from None
                time.sleep(0.05)
        client = stripe.StripeClient(
            "sk_test_bench", base_addresses={"api": url}, max_network_retries=0
        )
        customer_id = client.v1.customers.create().id
        results = {
            "retrieve": _threaded(
                "HTTP (SDK) customer retrieve",
                lambda: client.v1.customers.retrieve(customer_id),
                seconds,
                threads,
            ),
            "create": _threaded(
                "HTTP (SDK) customer create",
                lambda: client.v1.customers.create(params={"email": "h@example.com"}),
                seconds,
                threads,
            ),
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return results


def _threaded(name: str, call: Callable[[], object], seconds: float, threads: int) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            call()
            counts[index] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    rate = sum(counts) / (time.perf_counter() - started)
    print(f"{name}: {rate:,.0f} req/s ({threads} threads)", flush=True)
    return rate


# -- lists at scale ------------------------------------------------------------------------------

LIST_SIZES = (1_000, 100_000)


def _fill(sim: Simulator, kind: str, count: int) -> None:
    """Store `count` objects of `kind` straight from the templates (no events, no billing)."""
    account = sim.platform
    ctx = engine_ctx(sim, account)
    customers = max(1, count // 10) if kind != "customer" else count
    for index in range(customers):
        customer = ctx.build(
            "customer",
            "cus",
            id=f"cus_bench{index:07d}",
            created=1_700_000_000 + index,
            email=f"org{index}@bench.example",
        )
        customer["metadata"] = {"org": f"o{index}"}
        account.add(customer)
    if kind == "customer":
        return
    for index in range(count):
        owner = f"cus_bench{index % customers:07d}"
        fields: dict[str, object] = {"customer": owner, "created": 1_700_000_000 + index}
        if kind == "subscription":
            fields.update(status="active" if index % 4 else "canceled", _item_ids=[])
        else:
            fields.update(status="paid" if index % 3 else "open")
        account.add(ctx.build(kind, kind[:3], **fields))


_LIST_CALLS = {
    "customers.list (limit 10)": ("customer", "/v1/customers", {"limit": "10"}),
    "customers.list by email": ("customer", "/v1/customers", {"email": "org77@bench.example"}),
    "customers.search by metadata": (
        "customer",
        "/v1/customers/search",
        {"query": "metadata['org']:'o77'"},
    ),
    "customers.list, page 3 (starting_after)": (
        "customer",
        "/v1/customers",
        {"limit": "10", "starting_after": "cus_bench0000600"},
    ),
    "invoices.list by customer": (
        "invoice",
        "/v1/invoices",
        {"customer": "cus_bench0000077", "limit": "10"},
    ),
    "invoices.list by customer and status": (
        "invoice",
        "/v1/invoices",
        {"customer": "cus_bench0000077", "status": "open"},
    ),
    "subscriptions.list by customer": (
        "subscription",
        "/v1/subscriptions",
        {"customer": "cus_bench0000077"},
    ),
    "subscriptions.list by status": (
        "subscription",
        "/v1/subscriptions",
        {"status": "canceled", "limit": "10"},
    ),
}


def list_scaling(seconds: float) -> dict[str, float]:
    """Time each list call with 1,000 and 100,000 objects stored; print both and the ratio."""
    ratios = {}
    for name, (kind, path, query) in _LIST_CALLS.items():
        timings = []
        for size in LIST_SIZES:
            sim = Simulator(deliver_webhooks=False)
            app = create_app(sim, deliver_webhooks=False)
            _fill(sim, kind, size)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://stripesim", headers=HEADERS
            )
            timings.append(asyncio.run(_time_calls(client, path, query, seconds)))
            del sim, app
        ratio = timings[1] / timings[0]
        ratios[name] = ratio
        print(
            f"{name}: {timings[0] * 1000:.2f} ms at {LIST_SIZES[0]:,}, "
            f"{timings[1] * 1000:.2f} ms at {LIST_SIZES[1]:,} ({ratio:.2f}x)",
            flush=True,
        )
    return ratios


async def _time_calls(
    client: httpx.AsyncClient, path: str, query: dict[str, str], seconds: float
) -> float:
    """Return the mean seconds a call takes, one after another for `seconds`."""
    async with client:
        first = await client.get(path, params=query)
        assert first.status_code == 200, first.text
        assert first.json()["data"], f"{path} {query} found nothing"
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await client.get(path, params=query)
            done += 1
        return (time.perf_counter() - started) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="in-process concurrent requests"
    )
    parser.add_argument("--threads", type=int, default=8, help="SDK threads for the HTTP runs")
    parser.add_argument("--skip-http", action="store_true", help="only measure in process")
    parser.add_argument(
        "--lists-only", action="store_true", help="only measure lists at 1,000 and 100,000"
    )
    args = parser.parse_args()
    ratios = list_scaling(args.seconds)
    flat = max(ratios.values()) <= 2.0
    print(f"lists at 100,000 objects: worst {max(ratios.values()):.2f}x the time at 1,000", end="")
    print(" (within 2x)" if flat else " (MORE than 2x)")
    if args.lists_only:
        return 0 if flat else 1
    asyncio.run(raw_asgi(args.seconds))
    results = asyncio.run(in_process(args.seconds, args.concurrency))
    if not args.skip_http:
        over_http(args.seconds, args.threads)
    target = 2000
    slowest = min(results["retrieve"], results["create"])
    verdict = "meets" if slowest >= target else "BELOW"
    print(
        f"in-process simple requests: {slowest:,.0f} req/s, {verdict} the {target:,} req/s target"
    )
    return 0 if slowest >= target and flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
