"""CPU per usage event in process: bench/usage.py's batches through the ASGI app.

The same batches as bench/usage.py (1,000 new events each, fresh ids, for 200 offline Pro
customers signed up through the API) posted to `POST /v1/usage` with the API key, straight to
the app's ASGI callable (every middleware, the route, its thread pool and the recording) with no
HTTP server and no client process: the CPU measured (`time.process_time`, every thread of this
process) is Tollgate's own, so builds compare on a loaded machine better than over HTTP. The
batches' JSON is made before the measured loop.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/usage_inprocess.py
--callgrind --batches 10` and divide the instruction count ("Collected") by the events (10,000)
to compare builds (another build: put its sources first, see harness.InProcessApp).

Run: `.venv/bin/python bench/usage_inprocess.py [--batches 20] [--concurrency 2]
[--database sqlite|postgresql]`
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import orjson  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 200
BATCH = 1000


def _batches(count: int) -> list[bytes]:
    """`count` bodies of BATCH new events each, over the customers as in bench/usage.py."""
    bodies = []
    for first in range(0, count * BATCH, BATCH):
        events = [
            {"id": f"bench-{n}", "customer": f"org-{n % CUSTOMERS}", "meter": "runs", "value": 1}
            for n in range(first + 1, first + BATCH + 1)
        ]
        bodies.append(orjson.dumps({"events": events}))
    return bodies


async def _measure(app: harness.InProcessApp, batches: int, concurrency: int, on: bool) -> None:
    await app.sign_up(CUSTOMERS)
    warm = concurrency * 2
    bodies = _batches(warm + batches)
    accepted = 0

    async def worker(queue: Iterator[bytes]) -> None:
        nonlocal accepted
        for body in queue:
            status, answer = await app.call("POST", "/v1/usage", body)
            assert status == 200, (status, answer[:500])
            accepted += orjson.loads(answer)["accepted"]

    # Warm up (statements compiled, caches filled, every counter made), then measure the rest.
    warming = iter(bodies[:warm])
    await asyncio.gather(*(worker(warming) for _ in range(concurrency)))
    assert accepted == warm * BATCH, accepted
    accepted = 0
    measured = iter(bodies[warm:])
    with harness.callgrind(on):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(measured) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    events = batches * BATCH
    assert accepted == events, f"{accepted:,} of {events:,} accepted"
    print(
        f"{events:,} events in {batches} batches of {BATCH:,}, {concurrency} in flight: "
        f"{cpu / events * 1e6:.1f} µs CPU per event, {events / wall:,.0f} events/s",
        flush=True,
    )


def main() -> None:
    args = harness.in_process_arguments(__doc__, "batches", 20, 2)
    harness.run_in_process(
        args.database,
        lambda app: _measure(app, args.batches, args.concurrency, args.callgrind),
    )


if __name__ == "__main__":
    main()
