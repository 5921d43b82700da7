"""Measure usage ingestion: batches of 1,000 unique events through `POST /v1/usage`.

Two client processes post batches back to back to one `tollgate serve` process for a fixed time;
every event is new (a fresh id), for one of 200 customers on the Pro plan (soft limit: nothing is
refused), so each is deduplicated, counted in its customer's period counter and stored. Then the
bench checks the database: the counters add up to the events the answers accepted.

Run: `.venv/bin/python bench/usage.py [--seconds 10] [--database both]`
Targets (2 cores): 50,000 events/s on SQLite, 20,000 on PostgreSQL.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 200
BATCH = 1000


def _client(base_url: str, seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    prefix = secrets.token_hex(4)
    accepted = 0
    latencies: list[float] = []
    counter = 0
    with httpx.Client(base_url=base_url, headers=harness.headers(), timeout=60) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            events = []
            for _ in range(BATCH):
                counter += 1
                events.append(
                    {
                        "id": f"{prefix}-{counter}",
                        "customer": f"org-{counter % CUSTOMERS}",
                        "meter": "runs",
                        "value": 1,
                    }
                )
            body = orjson.dumps({"events": events})
            started = time.perf_counter()
            answer = http.post("/v1/usage", content=body)
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
            accepted += answer.json()["accepted"]
    results.put((accepted, latencies))


def run(kind: str, seconds: float, clients: int) -> None:
    with harness.database(kind) as url, harness.server(url) as (base_url, pid):
        with httpx.Client(base_url=base_url, headers=harness.headers(), timeout=60) as http:
            for index in range(CUSTOMERS):
                body = {"id": f"org-{index}", "email": f"o{index}@bench.example", "offline": True}
                http.post("/v1/customers", json={**body, "plan": "pro"}).raise_for_status()
        results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        workers = [
            multiprocessing.Process(target=_client, args=(base_url, seconds, results))
            for _ in range(clients)
        ]
        cpu = harness.process_cpu_seconds(pid)
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        outcomes = [results.get() for _ in workers]
        elapsed = time.perf_counter() - started
        cpu = harness.process_cpu_seconds(pid) - cpu
        for worker in workers:
            worker.join()
        accepted = sum(count for count, _ in outcomes)
        latencies = [value for _, found in outcomes for value in found]
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            counted, stored = connection.execute(
                sa.text(
                    "SELECT (SELECT coalesce(sum(value), 0) FROM usage_counters),"
                    " (SELECT count(*) FROM usage_events)"
                )
            ).one()
        engine.dispose()
    if counted != accepted or stored != accepted:
        raise SystemExit(f"{accepted:,} accepted but {counted:,} counted, {stored:,} stored")
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(
        f"{kind}: {accepted / elapsed:,.0f} events/s over {elapsed:.1f} s "
        f"({accepted:,} events in {len(latencies):,} batches of {BATCH:,} from {clients} "
        f"client processes); batch latency p50 {quantiles[49] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms\n"
        f"  server process: {cpu / elapsed:.0%} of one core, "
        f"{cpu / max(accepted, 1) * 1e6:.1f} µs CPU per event; "
        f"checked: counters and stored events equal the {accepted:,} accepted",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for kind in kinds:
        run(kind, args.seconds, args.clients)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
