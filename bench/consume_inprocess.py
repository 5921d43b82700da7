"""CPU per consume in process: bench/consume.py's calls through the ASGI app and its writer.

`POST /v1/customers/{id}/consume` (one unit, a fresh id each) for 200 offline Pro customers
signed up through the API, from `--concurrency` calls in flight (32, as bench/consume.py's
connections), sent straight to the app's ASGI callable (every middleware, the consume fast path,
the consume writer's thread and its group commits) with no HTTP server and no client process:
the CPU measured (`time.process_time`, every thread of this process) is Tollgate's own, so builds
compare on a loaded machine better than over HTTP. The mean group the writer committed is shown.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/consume_inprocess.py
--callgrind --calls 4000` and divide the instruction count ("Collected") by the calls to compare
builds (another build: put its sources first, see harness.InProcessApp). Under callgrind the
threads take turns, so the groups differ from a real run's: compare builds at equal groups.

Run: `.venv/bin/python bench/consume_inprocess.py [--calls 20000] [--concurrency 32]
[--database sqlite|postgresql]`
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import orjson  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 200


async def _measure(app: harness.InProcessApp, calls: int, concurrency: int, on: bool) -> None:
    await app.sign_up(CUSTOMERS)
    bodies = [
        orjson.dumps({"feature": "runs", "quantity": 1, "id": f"bench-{n}"})
        for n in range(CUSTOMERS + calls)
    ]
    paths = [f"/v1/customers/org-{n}/consume" for n in range(CUSTOMERS)]
    allowed = 0

    async def worker(numbers: range) -> None:
        nonlocal allowed
        for n in numbers:
            status, answer = await app.call("POST", paths[n % CUSTOMERS], bodies[n])
            assert status == 200, (status, answer[:500])
            allowed += orjson.loads(answer)["allowed"]

    def lanes(first: int, count: int) -> list[range]:
        return [range(first + lane, first + count, concurrency) for lane in range(concurrency)]

    # Warm up (statements compiled, caches filled, every counter made), then measure the rest.
    await asyncio.gather(*(worker(lane) for lane in lanes(0, CUSTOMERS)))
    writer = getattr(app.container.consume_writer, "groups", None)
    before = writer() if writer is not None else (0, 0)
    allowed = 0
    with harness.callgrind(on):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(lane) for lane in lanes(CUSTOMERS, calls)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert allowed == calls, f"{allowed:,} of {calls:,} allowed"
    groups = ""
    if writer is not None:
        after = writer()
        count, items = after[0] - before[0], after[1] - before[1]
        groups = f", {items / max(count, 1):.1f} calls a group on average"
    print(
        f"{calls:,} consumes, {concurrency} in flight: {cpu / calls * 1e6:.1f} µs CPU per "
        f"consume, {calls / wall:,.0f} consumes/s{groups}",
        flush=True,
    )


def main() -> None:
    args = harness.in_process_arguments(__doc__, "calls", 20000, 32)
    harness.run_in_process(
        args.database,
        lambda app: _measure(app, args.calls, args.concurrency, args.callgrind),
    )


if __name__ == "__main__":
    main()
