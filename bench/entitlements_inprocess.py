"""CPU per entitlement check in process: bench/entitlements.py's checks through the ASGI app.

The same `GET /v1/customers/{id}/entitlements/runs?quantity=1` as bench/entitlements.py, over 100
offline Pro customers (answers from the server's cache), sent straight to the app's ASGI callable
(every middleware and the fast path) with no HTTP server and no client process: the CPU measured
(`time.process_time`) is Tollgate's own, so builds compare on a loaded machine better than over
HTTP, where the load generator and the kernel's sockets weigh as much as the app.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/entitlements_inprocess.py
--callgrind --checks 5000` and divide the instruction count ("Collected") by the checks to
compare builds (another build: put its sources first, see harness.InProcessApp).

Run: `.venv/bin/python bench/entitlements_inprocess.py [--checks 50000] [--concurrency 16]
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

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 100


async def _measure(app: harness.InProcessApp, checks: int, concurrency: int, on: bool) -> None:
    await app.sign_up(CUSTOMERS)
    paths = [f"/v1/customers/org-{n % CUSTOMERS}/entitlements/runs" for n in range(CUSTOMERS)]

    async def worker(numbers: range) -> None:
        for n in numbers:
            status, answer = await app.call("GET", paths[n % CUSTOMERS], query=b"quantity=1")
            assert status == 200, (status, answer)

    def lanes(first: int, count: int) -> list[range]:
        return [range(first + lane, first + count, concurrency) for lane in range(concurrency)]

    # Warm up (every customer's decision cached), then measure the rest.
    await asyncio.gather(*(worker(lane) for lane in lanes(0, CUSTOMERS * 4)))
    with harness.callgrind(on):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(lane) for lane in lanes(0, checks)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{checks:,} checks, {concurrency} in flight: {cpu / checks * 1e6:.1f} µs CPU per "
        f"check, {checks / wall:,.0f} checks/s",
        flush=True,
    )


def main() -> None:
    args = harness.in_process_arguments(__doc__, "checks", 50_000, 16)
    harness.run_in_process(
        args.database,
        lambda app: _measure(app, args.checks, args.concurrency, args.callgrind),
    )


if __name__ == "__main__":
    main()
