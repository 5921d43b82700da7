"""Measure Stripe webhook intake: signed events over HTTP to `tollgate serve`, until committed.

Each POST answers 200 only after the event is stored and applied and the transaction has
committed, so the request's latency is the time from request to committed state. Every event is a
new `customer.subscription.updated` (a new event id, a newer `created`, other seats than the
subscription's last event), so every one is verified, inserted, applied to the mirror (the
subscription and its item), audited and invalidates its customer. Afterwards the bench checks
the database: one succeeded inbox row, one audit row and one `state_version` bump per 200.

The client keeps `--concurrency` deliveries in flight, as Stripe does (it sends many deliveries
to an endpoint at once). It runs on the same machine, so it also takes CPU from the server; the
server's own CPU use is printed to tell a saturated server from a busy machine.

Run: `.venv/bin/python bench/webhooks.py [--seconds 5] [--concurrency 32] [--database both]`
(PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL, default the test server's URL).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import importlib.util
import itertools
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/stripesim.py is named like the simulator's package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from stripesim.testing import free_port  # noqa: E402
from tollgate.db.migrate import upgrade  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
_process_cpu_seconds = harness.process_cpu_seconds

SECRET = "whsec_bench_0123456789abcdef"
REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "TOLLGATE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CUSTOMERS = 500
WRITER = "tollgate-webhooks"  # the group-commit writer whose commits the metrics count
# Stripe's published example objects, read from beside the repository (never copied into it).
STRIPE_EXAMPLES = REPO.parent / "shared" / "stripe" / "fixtures3.json"


_EXAMPLES: dict[str, bytes] = {}


def example(kind: str) -> dict[str, object]:
    """Return a fresh copy of Stripe's example object for `kind`."""
    if not _EXAMPLES:
        resources = orjson.loads(STRIPE_EXAMPLES.read_bytes())["resources"]
        _EXAMPLES.update({name: orjson.dumps(obj) for name, obj in resources.items()})
    return dict(orjson.loads(_EXAMPLES[kind]))


# Each delivery is signed when its body is made (`_event`), and `_sign` hands that signature
# out once: a bench that makes its bodies before its measured loop (webhooks_inprocess.py) so
# counts the server's work only, not its own HMAC of every body (under callgrind, without
# SHA-NI, as much as the server's). A signature older than RESIGN_AFTER seconds (a long run)
# is made anew, well inside the server's 300 s tolerance.
_SIGNATURES: dict[bytes, tuple[float, str]] = {}
RESIGN_AFTER = 200.0


def _sign(body: bytes) -> str:
    """The body's Stripe-Signature header: the one made with it, or a new one."""
    signed = _SIGNATURES.pop(body, None)
    if signed is not None and time.time() - signed[0] < RESIGN_AFTER:
        return signed[1]
    return _signature(body)


def _signature(body: bytes) -> str:
    timestamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _event(event_type: str, obj: dict[str, object], created: int) -> bytes:
    """A signed event's body (`_sign` gives its signature)."""
    event = example("event")
    event.update(
        id=f"evt_{secrets.token_hex(12)}",
        type=event_type,
        created=created,
        data={"object": obj},
        api_version="2026-10-28.endive",
    )
    body = orjson.dumps(event)
    _SIGNATURES[body] = (time.time(), _signature(body))
    return body


def _customer(index: int) -> dict[str, object]:
    obj = example("customer")
    obj.update(id=f"cus_bench{index:06d}", email=f"org{index}@bench.example", discount=None)
    obj["metadata"] = {"tollgate_customer_id": f"org-{index}"}
    return obj


def _subscription(index: int, seats: int) -> dict[str, object]:
    obj = example("subscription")
    item = obj["items"]["data"][0]
    item.update(id=f"si_bench{index:06d}", quantity=seats)
    item["price"]["metadata"] = {"tollgate_plan": "pro", "tollgate_interval": "month"}
    obj.update(
        id=f"sub_bench{index:06d}",
        customer=f"cus_bench{index:06d}",
        status="active",
        cancel_at=None,
        cancel_at_period_end=False,
    )
    return obj


def _start_server(database_url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_CATALOG": str(REPO / "catalog.example.yaml"),
        "STRIPE_WEBHOOK_SECRETS": SECRET,
        "STRIPE_SECRET_KEY": "sk_test_bench_no_calls_expected",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tollgate.cli", "serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("tollgate serve did not start")
        time.sleep(0.1)


class _Connection:
    """One keep-alive HTTP/1.1 connection: httpx's client costs more CPU than the server here."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {_sign(body)}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
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


async def _load(
    port: int, seconds: float, concurrency: int
) -> tuple[int, int, list[float], dict[str, tuple[int, int]]]:
    created = itertools.count(2_000_000_000)
    latencies: list[float] = []
    failures = 0
    # Per subscription, the newest event answered 200: (created, seats).
    newest: dict[str, tuple[int, int]] = {}
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal failures
        connection = await _Connection.open(port)
        try:
            for index in itertools.count(offset, concurrency):
                if time.perf_counter() >= stop:
                    return
                # The next event of the same subscription has other seats: every one changes it.
                subscription = _subscription(index % CUSTOMERS, seats=1 + index // CUSTOMERS % 50)
                when = next(created)
                body = _event("customer.subscription.updated", subscription, when)
                started = time.perf_counter()
                status = await connection.post("/webhooks/stripe", body)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures += 1
                    continue
                sub_id = str(subscription["id"])
                if when > newest.get(sub_id, (0, 0))[0]:
                    newest[sub_id] = (when, int(subscription["items"]["data"][0]["quantity"]))
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    elapsed = time.perf_counter() - started
    return int(len(latencies) / elapsed), failures, latencies, newest


async def _seed(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for index in range(CUSTOMERS):
            body = _event("customer.created", _customer(index), 1_900_000_000)
            answer = await client.post(url, content=body, headers={"Stripe-Signature": _sign(body)})
            answer.raise_for_status()


def _machine_busy_seconds() -> float:
    """CPU time all processes have used so far (every core); Linux only, else 0."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
    except OSError:
        return 0.0
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _check_committed(database_url: str, answered: int, newest: dict[str, tuple[int, int]]) -> str:
    """Check the database holds what the 200s promised; return a line saying so."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored, audited, versions = connection.execute(
                sa.text(
                    "SELECT"
                    " (SELECT count(*) FROM stripe_events"
                    "  WHERE type = 'customer.subscription.updated' AND status = 'succeeded'),"
                    " (SELECT count(*) FROM audit_log WHERE object_type = 'subscription'),"
                    " (SELECT sum(state_version) FROM customers)"
                )
            ).one()
            seats = dict(connection.execute(sa.text("SELECT id, seats FROM subscriptions")).all())
    finally:
        engine.dispose()
    wrong = [sub_id for sub_id, (_, expected) in newest.items() if seats.get(sub_id) != expected]
    problems = []
    if stored != answered:
        problems.append(f"{stored:,} events stored as succeeded for {answered:,} answers of 200")
    # Each seeded customer.created bumped its customer once; each change bumps it once more.
    if versions - CUSTOMERS != audited:
        problems.append(f"{audited:,} audit rows but {versions - CUSTOMERS:,} state_version bumps")
    if wrong:
        problems.append(f"{len(wrong)} subscriptions not at their newest event's seats")
    if problems:
        raise SystemExit("committed state does not match the answers: " + "; ".join(problems))
    # A delivery older than the stored state (the client does not keep order) is acknowledged
    # and skipped: no change, so no audit row.
    skipped = answered - audited
    return (
        f"{answered:,} events stored as succeeded, {audited:,} changes audited and invalidated"
        + (f" ({skipped:,} arrived after a newer one and were skipped)" if skipped else "")
        + f", all {len(newest):,} subscriptions at their newest event"
    )


def run(name: str, database_url: str, seconds: float, concurrency: int) -> None:
    upgrade(database_url)
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = _start_server(database_url, port, Path(workdir))
        try:
            asyncio.run(_seed(f"http://127.0.0.1:{port}/webhooks/stripe"))
            base_url = f"http://127.0.0.1:{port}"
            commits, items = harness.group_commits(base_url, WRITER)
            server_cpu, machine_cpu = _process_cpu_seconds(server.pid), _machine_busy_seconds()
            started = time.perf_counter()
            rate, failures, latencies, newest = asyncio.run(_load(port, seconds, concurrency))
            elapsed = time.perf_counter() - started
            server_cpu = _process_cpu_seconds(server.pid) - server_cpu
            machine_cpu = _machine_busy_seconds() - machine_cpu
            now_commits, now_items = harness.group_commits(base_url, WRITER)
            commits, items = now_commits - commits, now_items - items
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    checked = _check_committed(database_url, len(latencies) - failures, newest)
    quantiles = statistics.quantiles(latencies, n=100)
    note = f", {failures} not 200" if failures else ""
    print(
        f"{name}: {rate:,} events/s sustained over {seconds:.0f} s "
        f"({len(latencies):,} events, {concurrency} connections{note}); "
        f"request to committed state p50 {quantiles[49] * 1000:.1f} ms, "
        f"p99 {quantiles[98] * 1000:.1f} ms\n"
        f"  server process: {server_cpu / elapsed:.0%} of one core, "
        f"{server_cpu / max(len(latencies), 1) * 1e6:.0f} µs CPU per event; "
        f"the machine was {machine_cpu / elapsed / (os.cpu_count() or 1):.0%} busy "
        f"({os.cpu_count()} cores); {items / max(commits, 1):.1f} events a commit "
        f"({commits:,.0f} commits)\n"
        f"  checked: {checked}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            run("sqlite", f"sqlite:///{folder}/bench.db", args.seconds, args.concurrency)
    if args.database in ("postgresql", "both"):
        schema = f"bench_{secrets.token_hex(4)}"
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
            run("postgresql", url, args.seconds, args.concurrency)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


if __name__ == "__main__":
    main()
