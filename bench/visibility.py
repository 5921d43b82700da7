"""Measure how soon a webhook's change shows in `GET /v1/customers/{id}/entitlements`.

One `tollgate serve` process on a fresh database. Customers are seeded through webhooks (a
`customer.created` and a `customer.subscription.created` on plan pro each). Then, one at a
time, a `customer.subscription.updated` moves a customer to the other plan (pro ↔ team); as soon
as its 200 arrives the bench asks for the customer's entitlements, again and again, until the new
plan shows. Visibility is the time from the 200 to the first answer with the new plan, so it
includes one GET at least. With `--load N`, N more connections keep posting seat changes of
other customers meanwhile, so the server is busy applying webhooks as the change lands.

Run: `.venv/bin/python bench/visibility.py [--events 300] [--load 16] [--database both]`
Target: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import orjson  # noqa: E402


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
webhooks = _load("webhooks")  # the signed events and the raw keep-alive client

MEASURED = 50  # customers whose plan flips, one at a time
BUSY = 500  # customers whose seats change under --load


def _plan_change(index: int, plan: str) -> dict[str, object]:
    subscription = webhooks._subscription(index, seats=1)
    price = subscription["items"]["data"][0]["price"]  # type: ignore[index]
    price["metadata"] = {"tollgate_plan": plan, "tollgate_interval": "month"}
    return subscription


class _Reader(webhooks._Connection):  # type: ignore[name-defined,misc]
    """A keep-alive connection that GETs JSON with the bench's API key."""

    async def get_json(self, path: str) -> tuple[int, dict[str, object]]:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {harness.API_KEY}\r\n\r\n"
        )
        self.writer.write(head.encode())
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), orjson.loads(body)


async def _seed(port: int) -> None:
    connection = await webhooks._Connection.open(port)
    try:
        for index in range(MEASURED + BUSY):
            customer = webhooks._customer(index)
            for kind, obj in (
                ("customer.created", customer),
                ("customer.subscription.created", _plan_change(index, "pro")),
            ):
                body = webhooks._event(kind, obj, 1_900_000_000)
                status = await connection.post("/webhooks/stripe", body)
                assert status == 200, f"seeding answered {status}"
    finally:
        connection.close()


async def _measure(port: int, events: int, load: int) -> dict[str, object]:
    created = itertools.count(2_000_000_000)
    writer = await webhooks._Connection.open(port)
    reader = await _Reader.open(port)
    stop = asyncio.Event()
    background = 0

    async def busy(offset: int) -> None:
        nonlocal background
        connection = await webhooks._Connection.open(port)
        try:
            for step in itertools.count():
                if stop.is_set():
                    return
                index = MEASURED + (offset + step * load) % BUSY
                obj = webhooks._subscription(index, seats=2 + step % 40)
                body = webhooks._event("customer.subscription.updated", obj, next(created))
                await connection.post("/webhooks/stripe", body)
                background += 1
        finally:
            connection.close()

    tasks = [asyncio.create_task(busy(offset)) for offset in range(load)]
    await asyncio.sleep(0.5 if load else 0)  # let the load settle first
    visible: list[float] = []
    answered: list[float] = []
    polls: list[int] = []
    plans = dict.fromkeys(range(MEASURED), "pro")
    late = 0
    started = time.perf_counter()
    try:
        for sample in range(events):
            index = sample % MEASURED
            plan = "team" if plans[index] == "pro" else "pro"
            body = webhooks._event(
                "customer.subscription.updated", _plan_change(index, plan), next(created)
            )
            sent = time.perf_counter()
            status = await writer.post("/webhooks/stripe", body)
            acknowledged = time.perf_counter()
            assert status == 200, f"the webhook answered {status}"
            answered.append(acknowledged - sent)
            plans[index] = plan
            for attempt in itertools.count(1):
                status, answer = await reader.get_json(f"/v1/customers/org-{index}/entitlements")
                assert status == 200, f"entitlements answered {status}: {answer}"
                if answer["plan"] == plan:
                    visible.append(time.perf_counter() - acknowledged)
                    polls.append(attempt)
                    break
                if time.perf_counter() - acknowledged > 2.0:
                    late += 1
                    break
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        writer.close()
        reader.close()
    return {
        "visible": visible,
        "answered": answered,
        "polls": polls,
        "late": late,
        "background_rate": background / elapsed if load else 0.0,
    }


def run(kind: str, events: int, load: int) -> None:
    with (
        harness.database(kind) as url,
        harness.server(url, STRIPE_WEBHOOK_SECRETS=webhooks.SECRET) as (base_url, _pid),
    ):
        port = int(base_url.rsplit(":", 1)[1])
        asyncio.run(_seed(port))
        figures = asyncio.run(_measure(port, events, load))
    visible = figures["visible"]
    assert isinstance(visible, list) and len(visible) >= 2, "too few changes became visible"
    quantiles = statistics.quantiles(visible, n=100)
    answered = statistics.quantiles(figures["answered"], n=100)  # type: ignore[arg-type]
    first = sum(1 for count in figures["polls"] if count == 1)  # type: ignore[union-attr]
    busy = (
        f", while {load} connections posted {figures['background_rate']:,.0f} other events/s"
        if load
        else ""
    )
    print(
        f"{kind}: webhook 200 to the new plan in GET entitlements over {len(visible)} changes"
        f"{busy}: p50 {quantiles[49] * 1000:.2f} ms, p99 {quantiles[98] * 1000:.2f} ms, "
        f"max {max(visible) * 1000:.2f} ms; {first}/{len(visible)} visible at the first GET"
        + (f", {figures['late']} not visible within 2 s" if figures["late"] else "")
        + f"\n  (the webhook itself: p50 {answered[49] * 1000:.1f} ms, "
        f"p99 {answered[98] * 1000:.1f} ms)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--load", type=int, default=16, help="connections of background events")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql"):
        if args.database in (kind, "both"):
            run(kind, args.events, args.load)


if __name__ == "__main__":
    main()
