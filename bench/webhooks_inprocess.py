"""CPU per Stripe webhook event in process: bench/webhooks.py's events through the ASGI app.

The same signed `customer.subscription.updated` deliveries as bench/webhooks.py, sent straight to
the app's ASGI callable (every middleware, the fast path, the intake and its writer thread), with
no HTTP server and no client process: the CPU measured (`time.process_time`, every thread of
this process) is Tollgate's own, so builds compare on a loaded machine better than over HTTP.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/webhooks_inprocess.py
--callgrind --events 800` and compare the instruction counts ("Collected") of two builds. The
count includes signing each delivery (the bench's, about 6 % of it).

Run: `.venv/bin/python bench/webhooks_inprocess.py [--events 4000] [--concurrency 32]
[--database sqlite|postgresql]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
webhooks = harness.load("webhooks")

from tollgate.api.app import create_app  # noqa: E402
from tollgate.bootstrap import build_container  # noqa: E402
from tollgate.config import Settings  # noqa: E402

ROUTE = b"/webhooks/stripe"


class _App:
    """The app over a database, taking deliveries as ASGI calls."""

    def __init__(self, database_url: str) -> None:
        os.environ.update(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=database_url,
            TOLLGATE_CATALOG=str(harness.REPO / "catalog.example.yaml"),
            STRIPE_WEBHOOK_SECRETS=webhooks.SECRET,
            STRIPE_SECRET_KEY="sk_test_bench_no_calls_expected",
            STRIPE_API_BASE="http://127.0.0.1:9",
        )
        self.container = build_container(Settings())
        self.app = create_app(self.container)

    async def post(self, body: bytes) -> int:
        headers = [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"stripe-signature", webhooks._sign(body).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": ROUTE.decode(),
            "raw_path": ROUTE,
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "headers": headers,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never goes away
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        return statuses[0]


@contextmanager
def _callgrind(on: bool) -> Iterator[None]:
    """Count instructions for the block only, when running under callgrind."""
    if on:
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True)
    try:
        yield
    finally:
        if on:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True)


async def _measure(app: _App, events: int, concurrency: int, callgrind: bool) -> None:
    for index in range(webhooks.CUSTOMERS):
        customer = webhooks._customer(index)
        status = await app.post(webhooks._event("customer.created", customer, 1_900_000_000))
        assert status == 200, status
    bodies = [
        webhooks._event(
            "customer.subscription.updated",
            webhooks._subscription(index % webhooks.CUSTOMERS, seats=1 + index // 500 % 50),
            2_000_000_000 + index,
        )
        for index in range(events + concurrency * 4)
    ]
    # Warm up (statements compiled, caches filled), then measure the rest.
    await asyncio.gather(*(app.post(body) for body in bodies[: concurrency * 4]))
    measured = bodies[concurrency * 4 :]
    queue = iter(measured)

    async def worker() -> None:
        for body in queue:
            status = await app.post(body)
            assert status == 200, status

    with _callgrind(callgrind):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{len(measured):,} events, {concurrency} in flight: "
        f"{cpu / len(measured) * 1e6:.0f} µs CPU per event, {len(measured) / wall:,.0f} events/s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    with harness.database(args.database) as url:
        app = _App(url)
        # As `tollgate serve` sets it (tollgate/server.py).
        sys.setswitchinterval(0.0005)
        try:
            asyncio.run(_measure(app, args.events, args.concurrency, args.callgrind))
        finally:
            app.container.close()
            app.container.db.dispose()


if __name__ == "__main__":
    main()
