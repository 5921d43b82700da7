"""Measure usage ingestion: batches of 1,000 unique events through `POST /v1/usage`.

Two client processes post batches back to back to one `tollgate serve` process for a fixed time;
every event is new (a fresh id), for one of 200 customers on the Pro plan (soft limit: nothing is
refused), so each is deduplicated, counted in its customer's period counter and stored. Then the
bench checks the database: the counters add up to the events the answers accepted.

With `+redis` (TOLLGATE_REDIS_URL set, the Redis at 127.0.0.1:6379), the counters are counted
in Redis and the database gets the events and one pending row per counter per batch; the bench
then folds the pending rows into the counters (what the worker's flush job does every second),
prints how fast, and checks the counters and the Redis counters against the accepted events.

Run: `.venv/bin/python bench/usage.py [--seconds 10] [--database all]`
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


REDIS_URL = os.environ.get("TOLLGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def run(backend: str, seconds: float, clients: int) -> None:
    kind, _, counters = backend.partition("+")
    settings = (
        {"TOLLGATE_REDIS_URL": REDIS_URL, "TOLLGATE_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}:"}
        if counters == "redis"
        else {}
    )
    with (
        harness.database(kind) as url,
        harness.server(url, **settings) as (base_url, pid),
    ):
        harness.offline_pro_customers(base_url, CUSTOMERS)
        outcomes, elapsed, cpu = harness.run_clients(_client, (base_url, seconds), clients, pid)
        accepted = sum(count for count, _ in outcomes)
        latencies = [value for _, found in outcomes for value in found]
        folding = _fold(url, settings, accepted) if settings else ""
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
        f"{backend}: {accepted / elapsed:,.0f} events/s over {elapsed:.1f} s "
        f"({accepted:,} events in {len(latencies):,} batches of {BATCH:,} from {clients} "
        f"client processes); batch latency p50 {quantiles[49] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms\n"
        f"  server process: {cpu / elapsed:.0%} of one core, "
        f"{cpu / max(accepted, 1) * 1e6:.1f} µs CPU per event; "
        f"checked: counters and stored events equal the {accepted:,} accepted{folding}",
        flush=True,
    )


def _fold(url: str, settings: dict[str, str], accepted: int) -> str:
    """Fold the pending rows into the counters as the worker would; check Redis; drop its keys."""
    from tollgate.bootstrap import build_container
    from tollgate.config import load_settings
    from tollgate.services.usage import flush_usage

    app = build_container(
        load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=url,
            TOLLGATE_CATALOG=str(harness.REPO / "catalog.example.yaml"),
            **settings,
        )
    )
    try:
        started = time.perf_counter()
        folded = flush_usage(db=app.db, catalog=app.catalog, clock=app.clock)
        took = time.perf_counter() - started
        counters = app.usage_counters
        assert counters is not None
        keys = list(counters.scan())
        in_redis = sum(int(counters.client.hget(key, "v") or 0) for key in keys)
        if in_redis != accepted:
            raise SystemExit(f"{accepted:,} accepted but Redis counted {in_redis:,}")
        if keys:
            counters.client.delete(*keys)
    finally:
        app.close()
    rate = folded.rows / max(took, 1e-9)
    return (
        f" and Redis's {len(keys)} counters\n  flush: {folded.rows:,} pending rows folded"
        f" ({folded.counters:,} counter updates) in {took:.2f} s ({rate:,.0f} rows/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    backends = ["sqlite", "postgresql", "postgresql+redis", "sqlite+redis"]
    parser.add_argument(
        "--database",
        choices=[*backends, "both", "all"],
        default="all",
        help="both: sqlite and postgresql; all: those and postgresql+redis",
    )
    parser.add_argument(
        "--redis", action="store_true", help="count in Redis (the +redis variants) only"
    )
    args = parser.parse_args()
    chosen = {"both": backends[:2], "all": backends[:3]}.get(args.database, [args.database])
    if args.redis:
        chosen = [kind if kind.endswith("+redis") else f"{kind}+redis" for kind in chosen]
        chosen = list(dict.fromkeys(chosen))
    for backend in chosen:
        run(backend, args.seconds, args.clients)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
