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

Fetched: `--only fetch [--kind customer|subscription] [--events 400] [--concurrency 1]` measures
an event that needs Stripe: stripesim (a subprocess) holds `--objects` customers (with a
subscription each), and each round delivers, for every object, an update applied from its
payload, then a second update of the same second with other content, which Tollgate answers only
after fetching the object from stripesim (bench/peers' last pair). Both go through the whole app,
the CPU of each kind measured apart (by thread: the event loop, the writer thread, the threads
that fetch and apply). Then the fetch alone (`StripeGateway.retrieve_current`, the client side)
for the same objects as many times. Under callgrind with `--callgrind`, instructions are counted
for the fetched events' deliveries only (`--part delivery`), for the others (`--part payload`)
or for the fetch alone (`--part retrieve`); with `--separate-threads=yes`, callgrind writes a
file per thread (the event loop, the writer, the threads that fetch and apply).

Run: `.venv/bin/python bench/webhooks_inprocess.py [--events 4000] [--concurrency 32]
[--database sqlite|postgresql] [--statements] [--only asgi|writer|fetch] [--group 16]
[--kind subscription|customer] [--objects 100] [--part delivery|retrieve]`
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

import orjson

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
webhooks = harness.load("webhooks")
# bench/peers/workload.py: stripesim in a subprocess and its objects (the fetch mode).
_spec = importlib.util.spec_from_file_location("bench_peers_workload", _HERE / "peers/workload.py")
assert _spec and _spec.loader
peers = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = peers  # its dataclasses look their module up
_spec.loader.exec_module(peers)

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


def _stripesim_objects(port: int, count: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Make `count` customers with a subscription each in stripesim; return them as JSON."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import stripe

    base = f"http://127.0.0.1:{port}"
    key = peers.STRIPE_KEY
    client = stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=0)
    with ThreadPoolExecutor(8) as pool:
        made = peers.subscribed_customers(client, count, pool)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        return [
            (http.get(f"/v1/customers/{cus}").json(), http.get(f"/v1/subscriptions/{sub}").json())
            for cus, sub, _ in made
        ]


def _changed(kind: str, obj: dict[str, Any], version: int) -> dict[str, Any]:
    """A copy of the object as an update would carry it: another name, or other seats."""
    changed = orjson.loads(orjson.dumps(obj))
    if kind == "customer":
        changed["name"] = f"{obj['name']} v{version}"
    else:
        changed["items"]["data"][0]["quantity"] = 2 + version
    return changed


async def _measure_fetched(
    app: Any, objects: list[tuple[dict[str, Any], dict[str, Any]]], args: Any
) -> None:
    """Events that need Stripe against events applied from their payload (see the docstring)."""
    kind, concurrency = args.kind, args.concurrency
    event_type = "customer.updated" if kind == "customer" else "customer.subscription.updated"
    created = 2_000_000_000  # ahead of Stripe's clock: a fetched copy vouches for no later second
    for customer, subscription in objects:
        for body in (
            webhooks._event("customer.created", customer, created),
            webhooks._event("customer.subscription.created", subscription, created),
        ):
            status = await _post(app, body)
            assert status == 200, status
    rounds = max(args.events // len(objects), 1) + 1  # the first round warms up
    timed: dict[str, list[float]] = {"payload": [0.0, 0.0], "fetched": [0.0, 0.0]}
    spent: dict[str, dict[str, float]] = {"payload": {}, "fetched": {}}
    counted = {"payload": 0, "fetched": 0}
    intake = app.container.webhook_intake
    gc.collect()
    for round_ in range(rounds):
        second = created + 1 + round_
        pairs = [
            [
                webhooks._event(event_type, _changed(kind, obj, 2 * round_ + which), second)
                for which in (0, 1)
            ]
            for obj in (
                customer if kind == "customer" else subscription
                for customer, subscription in objects
            )
        ]
        for which, name in ((0, "payload"), (1, "fetched")):
            queue = iter([pair[which] for pair in pairs])

            async def worker(queue: Any = queue) -> None:
                for body in queue:
                    status = await _post(app, body)
                    assert status == 200, status

            instrument = args.callgrind and round_ > 0
            instrument = instrument and args.part == ("delivery" if which else "payload")
            with harness.callgrind(instrument):
                threads = _thread_cpu()
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                after = _thread_cpu()
            if round_ == 0:
                continue
            timed[name][0] += cpu
            timed[name][1] += wall
            counted[name] += len(pairs)
            for thread, total in after.items():
                # The threads that fetch and apply (asyncio.to_thread's) counted as one.
                known = (
                    "fetching"
                    if thread.startswith(("asyncio_", "tollgate-webhook-fetch"))
                    else thread
                )
                spent[name][known] = spent[name].get(known, 0.0) + total - threads.get(thread, 0.0)
    for name in ("payload", "fetched"):
        events = counted[name]
        per_thread = ", ".join(
            f"{thread} {cpu / events * 1e6:.0f}"
            for thread, cpu in sorted(spent[name].items())
            if cpu > 0
        )
        print(
            f"{kind} events applied from {'Stripe' if name == 'fetched' else 'the payload'}, "
            f"{concurrency} in flight: {events:,} events, "
            f"{timed[name][0] / events * 1e6:.0f} µs CPU per event ({per_thread}), "
            f"{events / timed[name][1]:,.0f} events/s",
            flush=True,
        )
    gateway = intake._gateway()
    object_type = "customer" if kind == "customer" else "subscription"
    ids = [
        obj["id"]
        for customer, subscription in objects
        for obj in ([customer] if kind == "customer" else [subscription])
    ]
    for object_id in ids[:10]:  # warm up
        gateway.retrieve_current(object_type, object_id)
    fetches = counted["fetched"]
    with harness.callgrind(args.callgrind and args.part == "retrieve"):
        cpu = time.thread_time()
        for index in range(fetches):
            gateway.retrieve_current(object_type, ids[index % len(ids)])
        cpu = time.thread_time() - cpu
    print(
        f"the fetch alone (retrieve_current {object_type}): {fetches:,} fetches, "
        f"{cpu / fetches * 1e6:.0f} µs CPU each (this thread)",
        flush=True,
    )


def _run_fetched(args: Any) -> None:
    """`--only fetch`: stripesim in a subprocess, its objects, then the in-process app."""
    with peers.stripesim() as (port, _):
        objects = _stripesim_objects(port, args.objects)
        harness.run_in_process(
            args.database,
            lambda app: _measure_fetched(app, objects, args),
            STRIPE_WEBHOOK_SECRETS=webhooks.SECRET,
            STRIPE_SECRET_KEY=peers.STRIPE_KEY,
            STRIPE_API_BASE=f"http://127.0.0.1:{port}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--only", choices=["asgi", "writer", "fetch"], default="asgi")
    parser.add_argument("--objects", type=int, default=100, help="fetch: objects in stripesim")
    parser.add_argument(
        "--part",
        choices=["delivery", "payload", "retrieve"],
        default="delivery",
        help="fetch, under callgrind: count the fetched deliveries, those applied from their "
        "payload, or the fetch alone",
    )
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
    if args.only == "fetch":
        _run_fetched(args)
        return
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
