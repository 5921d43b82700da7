"""Measure entitlement checks: over HTTP against one `tollgate serve` process, and in process.

HTTP: `--concurrency` keep-alive connections send `GET /v1/customers/{id}/entitlements/runs`
back to back for `--seconds`, over 100 customers (answers come from the server's cache, which the
change feed keeps true). The load comes from `wrk` when it is installed (`apt-get install wrk`: a
C load generator, so the figure is the server's), else from an asyncio client in this process,
which itself needs about a core and caps the figure near 3,000/s. For scale, the same load is
sent to a trivial FastAPI endpoint in the same run (the machine may be busy with other work).
In process: `LocalTollgate.check` for a cached decision, timed in a loop.

`--callgrind OUT` serves under `valgrind --tool=callgrind --separate-threads=yes` instead and
counts instructions for `--checks` checks only (the cache's TTL and refresh stretched, so reloads
do not count): divide the event loop thread's total (`OUT-01`, "totals:") by the checks; run the
other build with `PYTHONPATH=/work/old/src:/work/old/clients/python/src` to compare.

Run: `.venv/bin/python bench/entitlements.py [--seconds 5] [--concurrency 16] [--database sqlite]`
Targets (2 cores, load generator on the same machine): 8,000 checks/s with p99 under 10 ms over
HTTP; under 5 µs per cached in-process check.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import re
import shutil
import statistics
import subprocess
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
WRK_SCRIPT = f"""
local n = 0
request = function()
  n = n + 1
  local customer = "org-" .. (n % {CUSTOMERS})
  return wrk.format("GET", "/v1/customers/" .. customer .. "/entitlements/runs?quantity=1")
end
"""
TRIVIAL_APP = """
from fastapi import FastAPI, Response
app = FastAPI()
@app.get("/v1/customers/{customer_id}/entitlements/{feature}")
async def check(customer_id: str, feature: str, quantity: int = 1) -> Response:
    return Response(b'{"allowed":true}', media_type="application/json")
"""


async def _client(
    port: int, deadline: float, latencies: list[float], index: int, count: float = math.inf
) -> None:
    """Send checks on one keep-alive connection until `deadline` or `count` of them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = harness.headers()["Authorization"]
    n = index
    try:
        while time.perf_counter() < deadline and n - index < count:
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
        load(base_url, seconds=1.0, concurrency=concurrency)  # warm the cache
        cpu = harness.process_cpu_seconds(pid)
        rate, p50, p99, elapsed, generator = load(base_url, seconds, concurrency)
        cpu = harness.process_cpu_seconds(pid) - cpu
    print(
        f"{kind} over HTTP: {rate:,.0f} checks/s ({concurrency} connections, {elapsed:.1f} s, "
        f"{generator}); p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms; "
        f"server {cpu / elapsed:.0%} of one core, "
        f"{cpu / (rate * elapsed) * 1e6:.0f} µs CPU per check",
        flush=True,
    )


async def _send_all(port: int, checks: int, concurrency: int) -> None:
    each = checks // concurrency
    clients = (_client(port, math.inf, [], i * each, each) for i in range(concurrency))
    await asyncio.gather(*clients)


def under_callgrind(kind: str, checks: int, concurrency: int, out: str) -> None:
    """Serve under callgrind, counting instructions (per thread) for `checks` checks only."""
    wrapper = ("valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no")
    wrapper += (f"--callgrind-out-file={out}",)
    # Entries kept and the feed read rarely: under callgrind's slowdown the 1 s TTL and 5 ms
    # refresh would count reloads and feed reads, not checks.
    slow = {"TOLLGATE_ENTITLEMENT_CACHE_TTL": "60", "TOLLGATE_ENTITLEMENT_REFRESH": "5"}
    with (
        harness.database(kind) as url,
        harness.server(url, wrapper=wrapper, **slow) as (base_url, pid),
    ):
        with httpx.Client(base_url=base_url, headers=harness.headers(), timeout=60) as http:
            for index in range(CUSTOMERS):
                body = {"id": f"org-{index}", "email": f"o{index}@b.example", "offline": True}
                http.post("/v1/customers", json=body).raise_for_status()
        port = int(base_url.rsplit(":", 1)[1])
        asyncio.run(_send_all(port, CUSTOMERS * 2, concurrency))  # warm the cache
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True)
        asyncio.run(_send_all(port, checks, concurrency))
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True)
    print(f"{checks // concurrency * concurrency} checks counted: {out}-<thread> files", flush=True)


def load(base_url: str, seconds: float, concurrency: int) -> tuple[float, float, float, float, str]:
    """Checks per second, p50 and p99 in seconds, the time taken and the load generator."""
    if shutil.which("wrk") is None:
        port = int(base_url.rsplit(":", 1)[1])
        started = time.perf_counter()
        latencies = asyncio.run(_load(port, seconds, concurrency))
        elapsed = time.perf_counter() - started
        quantiles = statistics.quantiles(latencies, n=100)
        return len(latencies) / elapsed, quantiles[49], quantiles[98], elapsed, "asyncio client"
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
        command += ["-s", script.name, "-H", f"Authorization: {harness.headers()['Authorization']}"]
        out = subprocess.run([*command, base_url], capture_output=True, text=True, check=True)
    if "Non-2xx" in out.stdout:
        raise SystemExit(f"some checks did not answer 200:\n{out.stdout}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    p50, p99 = (_wrk_seconds(out.stdout, pct) for pct in ("50%", "99%"))
    return rate, p50, p99, seconds, "wrk"


def _wrk_seconds(report: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", report).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def trivial_reference(seconds: float, concurrency: int) -> None:
    """The same load against a FastAPI endpoint that does nothing: this machine's ceiling now."""
    port = harness.free_port()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "trivial.py").write_text(TRIVIAL_APP)
        command = [sys.executable, "-m", "uvicorn", "trivial:app", "--port", str(port)]
        command += ["--log-level", "warning", "--no-access-log"]
        process = subprocess.Popen(command, cwd=folder, env={**os.environ, "PYTHONPATH": folder})
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_until_up(base_url, process)
            load(base_url, 1.0, concurrency)
            rate, p50, p99, _, generator = load(base_url, seconds, concurrency)
        finally:
            process.terminate()
            process.wait()
    print(
        f"reference, a trivial FastAPI endpoint: {rate:,.0f} requests/s ({generator}); "
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms",
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


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/docs")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the reference server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--callgrind", metavar="OUT", help="count instructions into OUT-<thread>")
    parser.add_argument("--checks", type=int, default=2000, help="with --callgrind")
    args = parser.parse_args()
    if args.callgrind:
        kind = "postgresql" if args.database == "postgresql" else "sqlite"
        under_callgrind(kind, args.checks, args.concurrency, args.callgrind)
        return
    in_process()
    trivial_reference(args.seconds, args.concurrency)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for kind in kinds:
        over_http(kind, args.seconds, args.concurrency)


if __name__ == "__main__":
    main()
