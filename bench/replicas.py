"""Measure one and two `tollgate serve` replicas behind HAProxy on PostgreSQL.

Three loads, each for `--seconds` with `--concurrency` keep-alive connections to the balancer:
signed Stripe events (`customer.created`, a new customer each), usage batches of 10 events for
offline customers, and entitlement checks. Printed per load: requests/s through the balancer,
p50/p99 latency, and the servers' CPU per request. Afterwards every answered webhook and usage
event is counted in the database (nothing answered and missing).

This machine has two cores shared by the load generator, HAProxy, PostgreSQL and the servers:
the figures show the balancer's overhead and that replicas stay correct, not how Tollgate scales
on more cores.

Run: `.venv/bin/python bench/replicas.py [--seconds 5] [--concurrency 16]` (needs haproxy;
PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL, default the test server's URL).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import importlib.util
import itertools
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from stripesim.testing import free_port  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

SECRET = "whsec_bench_replicas_0123456789"
CUSTOMERS = 50


def _sign(body: bytes) -> str:
    timestamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _customer_event(index: int) -> bytes:
    customer = {
        "id": f"cus_rep{index:08d}",
        "object": "customer",
        "email": f"org{index}@bench.example",
        "name": None,
        "created": 1_900_000_000,
        "livemode": False,
        "metadata": {"tollgate_customer_id": f"rep-{index}"},
        "currency": None,
        "deleted": None,
        "address": None,
        "balance": 0,
        "delinquent": False,
        "invoice_settings": {"default_payment_method": None},
    }
    event = {
        "id": f"evt_rep{secrets.token_hex(10)}",
        "object": "event",
        "type": "customer.created",
        "created": 1_900_000_000,
        "api_version": "2026-10-28.endive",
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": customer},
    }
    return orjson.dumps(event)


class _Connection:
    """One keep-alive HTTP/1.1 connection (httpx would cost more CPU than the servers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await self.reader.readexactly(length)
        return int(status_line.split()[1])

    def close(self) -> None:
        self.writer.close()


Step = Callable[[_Connection, int], Awaitable[bool]]


async def _load(port: int, seconds: float, concurrency: int, step: Step) -> tuple[int, list[float]]:
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds
    counter = itertools.count()

    async def worker() -> None:
        nonlocal failures
        connection = await _Connection.open(port)
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                ok = await step(connection, next(counter))
                latencies.append(time.perf_counter() - started)
                failures += not ok
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures, latencies


def _haproxy_config(port: int, server_ports: list[int]) -> str:
    servers = "\n".join(
        f"    server api{i} 127.0.0.1:{p} check" for i, p in enumerate(server_ports)
    )
    return f"""global
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # Tollgate keeps nothing per connection: any idle server connection may serve any request.
    # Without it, alternating replicas opened connections and checks ran 2-5x slower here.
    http-reuse always
frontend api
    bind 127.0.0.1:{port}
    default_backend tollgate
backend tollgate
    balance roundrobin
    option httpchk GET /healthz
    default-server inter 1s
{servers}
"""


@contextmanager
def _balancer(server_ports: list[int]) -> Iterator[int]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "haproxy.cfg"
        config.write_text(_haproxy_config(port, server_ports))
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("haproxy did not start")
                time.sleep(0.05)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


def run(replicas: int, seconds: float, concurrency: int) -> None:
    auth = {"Authorization": f"Bearer {harness.API_KEY}"}
    with harness.database("postgresql") as url, ExitStack() as stack:
        servers = [
            stack.enter_context(harness.server(url, STRIPE_WEBHOOK_SECRETS=SECRET))
            for _ in range(replicas)
        ]
        ports = [int(base.rsplit(":", 1)[1]) for base, _ in servers]
        pids = [pid for _, pid in servers]
        port = stack.enter_context(_balancer(ports))
        base = f"http://127.0.0.1:{port}"
        for index in range(CUSTOMERS):
            body = {"id": f"org-{index}", "email": f"b@org{index}.example", "offline": True}
            body["plan"] = "pro"  # soft limits: no usage is refused
            httpx.post(f"{base}/v1/customers", json=body, headers=auth, timeout=30)
        usage_ids = itertools.count()
        answered = {"webhooks": 0, "usage": 0}

        async def webhook(connection: _Connection, index: int) -> bool:
            body = _customer_event(next(usage_ids))
            headers = {"Content-Type": "application/json", "Stripe-Signature": _sign(body)}
            ok = await connection.request("POST", "/webhooks/stripe", body, headers) == 200
            answered["webhooks"] += ok
            return ok

        async def usage(connection: _Connection, index: int) -> bool:
            customer = f"org-{index % CUSTOMERS}"
            events = [
                {"id": f"u{next(usage_ids)}", "customer": customer, "meter": "runs", "value": 1}
                for _ in range(10)
            ]
            body = orjson.dumps({"events": events})
            headers = {**auth, "Content-Type": "application/json"}
            ok = await connection.request("POST", "/v1/usage", body, headers) == 200
            answered["usage"] += 10 * ok
            return ok

        async def check(connection: _Connection, index: int) -> bool:
            path = f"/v1/customers/org-{index % CUSTOMERS}/entitlements/runs?quantity=1"
            return await connection.request("GET", path, headers=auth) == 200

        loads = (
            ("checks", check),
            ("webhooks", webhook),
            ("usage x10", usage),
            ("checks", check),  # again, with usage recorded by every replica meanwhile
        )
        for name, step in loads:
            cpu = sum(harness.process_cpu_seconds(pid) for pid in pids)
            started = time.perf_counter()
            failures, latencies = asyncio.run(_load(port, seconds, concurrency, step))
            elapsed = time.perf_counter() - started
            used = sum(harness.process_cpu_seconds(pid) for pid in pids) - cpu
            rate = len(latencies) / elapsed
            quantiles = statistics.quantiles(latencies, n=100)
            print(
                f"  {replicas} replica(s)  {name:<10} {rate:8.0f} req/s  "
                f"p50 {quantiles[49] * 1000:6.1f} ms  p99 {quantiles[98] * 1000:6.1f} ms  "
                f"server CPU {used / max(len(latencies), 1) * 1e6:6.0f} µs/req  "
                f"failed {failures}"
            )
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            events = connection.execute(sa.text("SELECT count(*) FROM stripe_events")).scalar()
            usage_rows = connection.execute(sa.text("SELECT count(*) FROM usage_events")).scalar()
        engine.dispose()
        print(
            f"  {replicas} replica(s)  committed: {events} events for {answered['webhooks']} "
            f"answered 200, {usage_rows} usage events for {answered['usage']} answered"
        )
        assert events == answered["webhooks"] and usage_rows == answered["usage"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if not (shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists()):
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    print(f"PostgreSQL, HAProxy round robin, {args.concurrency} connections, {args.seconds} s each")
    for replicas in (1, 2):
        run(replicas, args.seconds, args.concurrency)


if __name__ == "__main__":
    main()
