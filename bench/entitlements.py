"""Measure entitlement checks: over HTTP against one `tollgate serve` process, and in process.

HTTP: `--concurrency` keep-alive connections send `GET /v1/customers/{id}/entitlements/runs`
back to back for `--seconds`, over 100 customers (answers come from the server's cache, which the
change feed keeps true). In process: `LocalTollgate.check` for a cached decision, timed in a loop.

Run: `.venv/bin/python bench/entitlements.py [--seconds 5] [--concurrency 16] [--database sqlite]`
Targets (2 cores, load generator on the same machine): 8,000 checks/s with p99 under 10 ms over
HTTP; under 5 µs per cached in-process check.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402

from tollgate.bootstrap import build_container  # noqa: E402
from tollgate.client import LocalTollgate  # noqa: E402
from tollgate.config import load_settings  # noqa: E402
from tollgate.db.migrate import upgrade  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 100


async def _client(port: int, deadline: float, latencies: list[float], index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = harness.headers()["Authorization"]
    n = index
    try:
        while time.perf_counter() < deadline:
            n += 1
            path = f"/v1/customers/org-{n % CUSTOMERS}/entitlements/runs?quantity=1"
            started = time.perf_counter()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n".encode()
            )
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status:
                raise SystemExit(f"check answered {status!r}")
    finally:
        writer.close()


async def _load(port: int, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, deadline, latencies, i) for i in range(concurrency)))
    return latencies


def over_http(kind: str, seconds: float, concurrency: int) -> None:
    with harness.database(kind) as url, harness.server(url) as (base_url, pid):
        with httpx.Client(base_url=base_url, headers=harness.headers(), timeout=60) as http:
            for index in range(CUSTOMERS):
                body = {"id": f"org-{index}", "email": f"o{index}@b.example", "offline": True}
                http.post("/v1/customers", json=body).raise_for_status()
        port = int(base_url.rsplit(":", 1)[1])
        asyncio.run(_load(port, 1.0, concurrency))  # warm the cache
        cpu = harness.process_cpu_seconds(pid)
        started = time.perf_counter()
        latencies = asyncio.run(_load(port, seconds, concurrency))
        elapsed = time.perf_counter() - started
        cpu = harness.process_cpu_seconds(pid) - cpu
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{kind} over HTTP: {len(latencies) / elapsed:,.0f} checks/s "
        f"({concurrency} connections, {elapsed:.1f} s); p50 {quantiles[49] * 1000:.2f} ms, "
        f"p99 {quantiles[98] * 1000:.2f} ms; server {cpu / elapsed:.0%} of one core, "
        f"{cpu / len(latencies) * 1e6:.0f} µs CPU per check",
        flush=True,
    )


def in_process(rounds: int = 200_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        settings = load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=url,
            TOLLGATE_CATALOG=str(harness.REPO / "catalog.example.yaml"),
        )
        app = build_container(settings)
        billing = LocalTollgate(app)
        billing.create_customer("acme", email="b@acme.example", offline=True)
        check = billing.check
        check("acme", "runs")
        started = time.perf_counter()
        for _ in range(rounds):
            check("acme", "runs")
        per_check = (time.perf_counter() - started) / rounds
        app.close()
    print(f"in process: {per_check * 1e6:.2f} µs per cached check ({rounds:,} checks)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    in_process()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for kind in kinds:
        over_http(kind, args.seconds, args.concurrency)


if __name__ == "__main__":
    main()
