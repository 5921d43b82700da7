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

Writer: `--only writer [--group 16] [--kind subscription|customer]` measures the webhook writer
thread's work alone: the same deliveries, verified beforehand, applied by
`apply_stripe_deliveries` in groups of `--group` (16 is about what 32 in flight make; 1 is a lone
delivery's) on one thread with its connection pinned, as the writer thread applies them, with no
event loop and no signing. `--kind customer` sends `customer.updated` events (a new name each)
instead: bench/peers' other workload. Under `valgrind --tool=callgrind --instr-atstart=no` with
`--callgrind`, the instructions over the events shown compare builds at equal groups (the ASGI
run's groups vary with load).

Run: `.venv/bin/python bench/webhooks_inprocess.py [--events 4000] [--concurrency 32]
[--database sqlite|postgresql] [--statements] [--only asgi|writer] [--group 16]
[--kind subscription|customer]`
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


def _delivery(intake: Any, body: bytes) -> Any:
    """A delivery as the event loop hands it to the writer: signed, verified, parsed."""
    from tollgate.services.webhooks.inbox import verify_stripe_delivery

    return verify_stripe_delivery(
        raw_body=body,
        signature_header=webhooks._sign(body),
        settings=intake.settings,
        clock=intake.clock,
    )


def _update(kind: str, index: int) -> bytes:
    """The `index`-th measured event of the writer mode: other seats of a subscription, or
    another name of a customer (bench/peers/workload.py's two workloads)."""
    customer = index % webhooks.CUSTOMERS
    created = 2_000_000_000 + index
    if kind == "customer":
        obj = webhooks._customer(customer)
        obj["name"] = f"Org {customer} v{index}"
        return webhooks._event("customer.updated", obj, created)
    obj = webhooks._subscription(customer, seats=1 + index // 500 % 50)
    return webhooks._event("customer.subscription.updated", obj, created)


async def _measure_writer(
    app: Any, events: int, group: int, kind: str, callgrind: bool, statements: Any = None
) -> None:
    """The writer's work per event at groups of `group`, on this thread (see the docstring)."""
    from tollgate.services.webhooks.inbox import apply_stripe_deliveries

    intake = app.container.webhook_intake

    def apply(deliveries: list[Any]) -> None:
        for start in range(0, len(deliveries), group):
            results = apply_stripe_deliveries(
                db=intake.db,
                deliveries=deliveries[start : start + group],
                clock=intake.clock,
                dunning=intake.dunning,
            )
            assert all(result.outcome == "succeeded" for result in results), results[:1]

    customers = [
        _delivery(
            intake, webhooks._event("customer.created", webhooks._customer(index), 1_900_000_000)
        )
        for index in range(webhooks.CUSTOMERS)
    ]
    measured = max(events // group, 1) * group
    updates = [
        _delivery(intake, _update(kind, index)) for index in range(webhooks.CUSTOMERS + measured)
    ]
    with intake.db.pinned():
        apply(customers)
        apply(updates[: webhooks.CUSTOMERS])  # warm up: every object updated once
        # The writer holds a group's events, not thousands: the parsed events waiting here are
        # left out of the collector's passes, which would otherwise walk them all again and again.
        gc.collect()
        gc.freeze()
        if statements is not None:
            statements.on = True
        with harness.callgrind(callgrind):
            cpu = time.process_time()
            apply(updates[webhooks.CUSTOMERS :])
            cpu = time.process_time() - cpu
        if statements is not None:
            statements.on = False
    print(
        f"webhook writer, {kind} events, groups of {group}: {measured:,} events, "
        f"{cpu / measured * 1e6:.1f} µs CPU per event",
        flush=True,
    )
    if statements is not None:
        print(statements.report(measured, "event"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--only", choices=["asgi", "writer"], default="asgi")
    parser.add_argument("--group", type=int, default=16, help="writer: events a group")
    parser.add_argument(
        "--kind",
        choices=["subscription", "customer"],
        default="subscription",
        help="writer: customer.subscription.updated (other seats) or customer.updated (a name)",
    )
    args = parser.parse_args()
    if args.group < 1:
        parser.error("--group must be 1 or more")
    statements = harness.Statements() if args.statements else None
    if args.only == "writer":
        measure = lambda app: _measure_writer(  # noqa: E731
            app, args.events, args.group, args.kind, args.callgrind, statements
        )
    else:
        measure = lambda app: _measure(  # noqa: E731
            app, args.events, args.concurrency, args.callgrind, statements
        )
    harness.run_in_process(args.database, measure, STRIPE_WEBHOOK_SECRETS=webhooks.SECRET)


if __name__ == "__main__":
    main()
