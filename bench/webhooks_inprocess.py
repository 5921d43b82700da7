"""CPU per Stripe webhook event in process: bench/webhooks.py's events through the ASGI app.

The same signed `customer.subscription.updated` deliveries as bench/webhooks.py, sent straight to
the app's ASGI callable (every middleware, the fast path, the intake and its writer thread), with
no HTTP server and no client process: the CPU measured (`time.process_time`, every thread of
this process) is Tollgate's own, so builds compare on a loaded machine better than over HTTP.

`--callgrind` switches callgrind's instrumentation on for the measured loop only: run it as
`valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/webhooks_inprocess.py
--callgrind --events 800` and compare the instruction counts ("Collected") of two builds. The
count includes signing each delivery (the bench's, about 6 % of it).

`--statements` counts the statements each event runs over the measured loop, by kind, on the
driver's cursors (harness.Statements): the commits are the events over the events a commit.

Run: `.venv/bin/python bench/webhooks_inprocess.py [--events 4000] [--concurrency 32]
[--database sqlite|postgresql] [--statements]`
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
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

ROUTE = "/webhooks/stripe"


async def _post(app: Any, body: bytes) -> int:
    """A signed delivery through the whole app; its status."""
    signature = [(b"stripe-signature", webhooks._sign(body).encode())]
    status, _ = await app.call("POST", ROUTE, body, headers=signature)
    return status


async def _measure(
    app: Any, events: int, concurrency: int, callgrind: bool, statements: Any = None
) -> None:
    for index in range(webhooks.CUSTOMERS):
        customer = webhooks._customer(index)
        status = await _post(app, webhooks._event("customer.created", customer, 1_900_000_000))
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
    await asyncio.gather(*(_post(app, body) for body in bodies[: concurrency * 4]))
    measured = bodies[concurrency * 4 :]
    queue = iter(measured)

    async def worker() -> None:
        for body in queue:
            status = await _post(app, body)
            assert status == 200, status

    writer = app.container.webhook_intake._writer
    if statements is not None:
        statements.on = True
    with harness.callgrind(callgrind):
        groups, threads = writer.applied, _thread_cpu()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        threads = {name: spent - threads.get(name, 0.0) for name, spent in _thread_cpu().items()}
        groups = writer.applied[0] - groups[0]
    if statements is not None:
        statements.on = False
    per_thread = ", ".join(
        f"{name} {spent / len(measured) * 1e6:.0f}" for name, spent in sorted(threads.items())
    )
    print(
        f"{len(measured):,} events, {concurrency} in flight: "
        f"{cpu / len(measured) * 1e6:.0f} µs CPU per event ({per_thread}), "
        f"{len(measured) / wall:,.0f} events/s, {len(measured) / max(groups, 1):.1f} per commit",
        flush=True,
    )
    if statements is not None:
        print(statements.report(len(measured), "event"), flush=True)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each running thread of this process so far, by thread name."""
    spent: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        clock = time.pthread_getcpuclockid(thread.ident)
        spent[thread.name] = spent.get(thread.name, 0.0) + time.clock_gettime(clock)
    return spent


def main() -> None:
    args = harness.in_process_arguments(__doc__, "events", 4000, 32, statements=True)
    statements = harness.Statements() if args.statements else None
    harness.run_in_process(
        args.database,
        lambda app: _measure(app, args.events, args.concurrency, args.callgrind, statements),
        STRIPE_WEBHOOK_SECRETS=webhooks.SECRET,
    )


if __name__ == "__main__":
    main()
