"""CPU per usage event in process: bench/usage.py's batches through the ASGI app.

The same batches as bench/usage.py (1,000 new events each, fresh ids, for 200 offline Pro
customers signed up through the API) posted to `POST /v1/usage` with the API key, straight to
the app's ASGI callable (every middleware, the route, its thread pool and the recording), with
no HTTP server and no client process: the CPU measured (`time.process_time`, every thread of
this process) is Tollgate's own, so builds compare on a loaded machine better than over HTTP.
The batches are built before the measured loop, so their JSON is not counted.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/usage_inprocess.py
--callgrind --batches 10` and divide the instruction count ("Collected") by the events
(10,000) to compare builds. Another build runs with this venv and this script by putting its
sources first, e.g. `PYTHONPATH=/work/old/src:/work/old/clients/python/src`: the script keeps
to the public HTTP API and this folder's harness, and takes the catalog of the build it runs.

Run: `.venv/bin/python bench/usage_inprocess.py [--batches 20] [--concurrency 2]
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

import orjson  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

import tollgate  # noqa: E402
from tollgate.api.app import create_app  # noqa: E402
from tollgate.bootstrap import build_container  # noqa: E402
from tollgate.config import Settings  # noqa: E402

CUSTOMERS = 200
BATCH = 1000
# The catalog of the build being measured (src/tollgate -> the repository).
CATALOG = Path(tollgate.__file__).resolve().parents[2] / "catalog.example.yaml"


class _App:
    """The app over a database, taking API calls as ASGI calls."""

    def __init__(self, database_url: str) -> None:
        os.environ.update(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=database_url,
            TOLLGATE_CATALOG=str(CATALOG),
            TOLLGATE_API_KEYS=f"bench:write:{harness.API_KEY}",
            STRIPE_SECRET_KEY="sk_test_bench_no_calls_expected",
            STRIPE_API_BASE="http://127.0.0.1:9",
        )
        self.container = build_container(Settings())
        self.app = create_app(self.container)
        self.authorization = f"Bearer {harness.API_KEY}".encode()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = [
            (b"host", b"127.0.0.1"),
            (b"authorization", self.authorization),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "headers": headers,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never goes away
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return statuses[0], b"".join(chunks)


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


def _batches(count: int, first: int) -> list[bytes]:
    """`count` bodies of BATCH new events each, spread over the customers as bench/usage.py."""
    bodies = []
    counter = first
    for _ in range(count):
        events = []
        for _ in range(BATCH):
            counter += 1
            events.append(
                {
                    "id": f"bench-{counter}",
                    "customer": f"org-{counter % CUSTOMERS}",
                    "meter": "runs",
                    "value": 1,
                }
            )
        bodies.append(orjson.dumps({"events": events}))
    return bodies


async def _sign_up(app: _App) -> None:
    """Sign up the offline Pro customers, org-0 to org-199, through the API."""
    for index in range(CUSTOMERS):
        body = {"id": f"org-{index}", "email": f"o{index}@bench.example", "offline": True}
        status, answer = await app.post("/v1/customers", orjson.dumps({**body, "plan": "pro"}))
        assert status in (200, 201), (status, answer)


async def _measure(app: _App, batches: int, concurrency: int, callgrind: bool) -> None:
    await _sign_up(app)
    warm = concurrency * 2
    bodies = _batches(warm + batches, 0)
    accepted = 0

    async def worker(queue: Iterator[bytes]) -> None:
        nonlocal accepted
        for body in queue:
            status, answer = await app.post("/v1/usage", body)
            assert status == 200, (status, answer[:500])
            accepted += orjson.loads(answer)["accepted"]

    # Warm up (statements compiled, caches filled, counters made), then measure the rest.
    warming = iter(bodies[:warm])
    await asyncio.gather(*(worker(warming) for _ in range(concurrency)))
    assert accepted == warm * BATCH, accepted
    accepted = 0
    queue = iter(bodies[warm:])
    with _callgrind(callgrind):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    events = batches * BATCH
    assert accepted == events, f"{accepted:,} of {events:,} accepted"
    print(
        f"{events:,} events in {batches} batches of {BATCH:,}, {concurrency} in flight: "
        f"{cpu / events * 1e6:.1f} µs CPU per event, {events / wall:,.0f} events/s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    with harness.database(args.database) as url:
        app = _App(url)
        # As `tollgate serve` sets it (tollgate/server.py).
        sys.setswitchinterval(0.0005)
        try:
            asyncio.run(_measure(app, args.batches, args.concurrency, args.callgrind))
        finally:
            app.container.close()
            app.container.db.dispose()


if __name__ == "__main__":
    main()
