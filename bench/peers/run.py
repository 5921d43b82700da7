"""Tollgate against its peers, in one run: the same signed Stripe events over HTTP, from the same
load generator, to Tollgate, dj-stripe and @supabase/stripe-sync-engine, each on its own database
of the same PostgreSQL, each checked afterwards.

stripesim makes the events (see workload.py) and is every peer's Stripe. For each peer: its
schema is migrated and the seed events (customers, subscriptions) delivered into a template
database; then, for each workload and each concurrency, peer after peer: a copy of its template,
the peer served on it, the workload's deliveries sent with that many connections, the failures
redelivered (as Stripe retries), and the database read back:

- final state: every object at stripesim's final value (the last update);
- same second: of those, the objects whose last two updates share a `created` second;
- duplicates: the events the peer recorded as applied, against the distinct events delivered
  (every tenth event is delivered twice); a peer that keeps no record says so.

CPU per event is measured per process: the peer's server processes (all of gunicorn's), its
PostgreSQL backends, and stripesim (what the peer's fetches cost Stripe's side).

Run: `.venv/bin/python bench/peers/run.py [--customers 200] [--rounds 8]
[--concurrency 1 8 32] [--peers tollgate dj-stripe stripe-sync-engine stripe-sync-engine+fetch]
[--workloads customers subscriptions] [--callgrind FOLDER]`
(PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL; dj-stripe's venv and stripe-sync-engine's
node_modules are installed under bench/peers/ on the first run, from PyPI and npm.)
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import PEERS
from workload import Events, Workload, deliver, harness, make_events, redeliver, stripesim

SEED_CONCURRENCY = 4


@dataclass
class Result:
    peer: str
    workload: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    app_us: float  # server processes' CPU per event
    db_us: float  # its PostgreSQL backends' CPU per event
    stripe_us: float  # stripesim's CPU per event
    checked: str
    correct: bool


class Postgres:
    """Databases on the bench's PostgreSQL: made from templates, dropped at the end."""

    def __init__(self) -> None:
        self.engine = sa.create_engine(harness.POSTGRES_URL, isolation_level="AUTOCOMMIT")
        self.prefix = f"peers_{secrets.token_hex(3)}"
        self.made: list[str] = []

    def create(self, name: str, template: str | None = None) -> str:
        database = f"{self.prefix}_{re.sub(r'[^a-z0-9]', '_', name)}"
        clause = f' TEMPLATE "{template}"' if template else ""
        for attempt in range(50):
            try:
                with self.engine.connect() as connection:
                    connection.execute(sa.text(f'CREATE DATABASE "{database}"{clause}'))
                break
            except sa.exc.OperationalError:  # the template's last sessions are still closing
                if attempt == 49:
                    raise
                time.sleep(0.2)
        self.made.append(database)
        return database

    def drop(self, database: str) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        self.made.remove(database)

    def backend_cpu(self, database: str) -> dict[int, float]:
        """CPU seconds so far of each PostgreSQL backend serving `database` (Linux, same host)."""
        with self.engine.connect() as connection:
            pids = connection.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                {"name": database},
            ).scalars()
            return {pid: harness.process_cpu_seconds(pid) for pid in pids}

    def close(self) -> None:
        for database in list(self.made):
            self.drop(database)
        self.engine.dispose()


def tree_cpu(pid: int) -> float:
    """CPU seconds so far of a process and its descendants (gunicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += harness.process_cpu_seconds(current)
        todo.extend(children.get(current, []))
    return total


def seed(name: str, events: Events, postgres: Postgres, stripe_port: int) -> str:
    """Install and migrate the peer, deliver the seed events; return the template database."""
    peer = PEERS[name]
    peer.install()
    template = postgres.create(f"{name}_template")
    peer.migrate(template)
    with peer.serve(template, stripe_port) as serving:
        failed = deliver(serving.port, serving.path, events.seeds, SEED_CONCURRENCY).failed
        failed = redeliver(serving.port, serving.path, failed)
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} seed events failed after retries")
    return template


def check(name: str, database: str, workload: Workload, deliveries: int) -> tuple[str, bool]:
    """Compare what the peer stored with stripesim's final objects; return a line and a verdict."""
    peer = PEERS[name]
    stored = peer.final_values(database, workload)
    wrong = {key for key, value in workload.expected.items() if stored.get(key) != value}
    same = workload.same_second
    line = (
        f"{len(workload.expected) - len(wrong)}/{len(workload.expected)} objects final, "
        f"same-second {len(same - wrong)}/{len(same)}"
    )
    if wrong:
        key = min(wrong)
        line += f" (e.g. {key}: {stored.get(key)!r}, stripesim {workload.expected[key]!r})"
    applied = peer.applied(database, workload)
    distinct = len(workload.event_ids)
    if applied is None:
        line += f"; no record of events ({deliveries:,} deliveries of {distinct:,} events)"
    else:
        line += f"; {applied:,} events recorded for {distinct:,} sent {deliveries:,} times"
    return line, not wrong and applied in (None, distinct)


def measure(
    name: str,
    template: str,
    workload: Workload,
    warmup: list[bytes],
    concurrency: int,
    postgres: Postgres,
    sim: tuple[int, int],
) -> Result:
    peer = PEERS[name]
    stripe_port, stripe_pid = sim
    database = postgres.create(f"{name}_run", template)
    try:
        with peer.serve(database, stripe_port) as serving:
            # Warm up (connections, pools, lazy imports) on seed events it already holds.
            deliver(serving.port, serving.path, warmup[: 4 * concurrency], concurrency)
            app, stripe_cpu = tree_cpu(serving.pid), harness.process_cpu_seconds(stripe_pid)
            backends = postgres.backend_cpu(database)
            counted = peer.counts(serving)
            instrumented = PEERS["tollgate"].callgrind is not None and name == "tollgate"
            if instrumented:
                switch_instrumentation(serving.pid, "on")
            delivered = deliver(serving.port, serving.path, workload.deliveries, concurrency)
            if instrumented:
                switch_instrumentation(serving.pid, "off")
            app = tree_cpu(serving.pid) - app
            counted = {
                name: count - counted.get(name, 0.0) for name, count in peer.counts(serving).items()
            }
            stripe_cpu = harness.process_cpu_seconds(stripe_pid) - stripe_cpu
            after = postgres.backend_cpu(database)
            db = sum(cpu - backends.get(pid, 0.0) for pid, cpu in after.items())
            left = redeliver(serving.port, serving.path, delivered.failed)
        checked, correct = check(name, database, workload, len(workload.deliveries))
        if instrumented:
            totals = (PEERS["tollgate"].callgrind / f"tollgate.{serving.pid}").read_text()
            instructions = int(re.search(r"^totals: (\d+)", totals, re.M).group(1))
            checked += f"; {instructions / len(workload.deliveries):,.0f} instructions a delivery"
        if counted:
            checked += "; counted: " + ", ".join(
                f"{what} {count:,.0f}" for what, count in sorted(counted.items()) if count
            )
        if delivered.failed:
            checked += f"; {len(delivered.failed)} answered non-2xx"
            checked += f", {len(left)} still after 3 retries" if left else ", then took on retry"
        count = len(delivered.latencies)
        quantiles = statistics.quantiles(delivered.latencies, n=100)
        return Result(
            name,
            workload.name,
            concurrency,
            count / delivered.elapsed,
            quantiles[49] * 1000,
            quantiles[98] * 1000,
            app / count * 1e6,
            db / count * 1e6,
            stripe_cpu / count * 1e6,
            checked,
            correct and not left,
        )
    finally:
        postgres.drop(database)


def switch_instrumentation(pid: int, state: str) -> None:
    """Switch callgrind's instrumentation of the served process on or off."""
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)


def report(results: list[Result]) -> None:
    order = list(PEERS)
    results = sorted(results, key=lambda r: (order.index(r.peer), r.workload, r.concurrency))
    print(
        "\npeer                     workload       conn   events/s   p50 ms   p99 ms"
        "   CPU µs/event: server  PostgreSQL  stripesim   correct"
    )
    for r in results:
        print(
            f"{r.peer:24} {r.workload:14} {r.concurrency:4} {r.rate:10,.0f} {r.p50_ms:8.1f}"
            f" {r.p99_ms:8.1f} {r.app_us:21,.0f} {r.db_us:11,.0f} {r.stripe_us:10,.0f}"
            f"   {'yes' if r.correct else 'NO'}"
        )
    tollgate = {(r.workload, r.concurrency): r for r in results if r.peer == "tollgate"}
    others = [
        r for r in results if r.peer != "tollgate" and (r.workload, r.concurrency) in tollgate
    ]
    if others:
        print("\nTollgate against each peer (x = Tollgate's advantage):")
        print(
            "peer                     workload       conn   events/s   server CPU"
            "   server+PostgreSQL CPU"
        )
    for r in others:
        t = tollgate[(r.workload, r.concurrency)]
        print(
            f"{r.peer:24} {r.workload:14} {r.concurrency:4} {t.rate / r.rate:9.1f}x"
            f" {r.app_us / t.app_us:11.1f}x {(r.app_us + r.db_us) / (t.app_us + t.db_us):22.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=8, help="updates per object before the pair")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--workloads", nargs="+", choices=["customers", "subscriptions"])
    parser.add_argument(
        "--callgrind",
        type=Path,
        help="serve Tollgate under callgrind, counting its instructions over the deliveries "
        "(files in this folder); compare builds at --concurrency 1",
    )
    args = parser.parse_args()
    if args.callgrind is not None:
        args.callgrind.mkdir(parents=True, exist_ok=True)
        PEERS["tollgate"].callgrind = args.callgrind.resolve()
    postgres = Postgres()
    results: list[Result] = []
    try:
        with stripesim() as sim:
            started = time.perf_counter()
            events = make_events(sim[0], args.customers, args.rounds)
            workloads = [w for w in events.workloads if w.name in (args.workloads or [w.name])]
            print(
                f"stripesim made {len(events.seeds):,} seed events and "
                + ", ".join(
                    f"{len(w.event_ids):,} {w.event_type} ({len(w.deliveries):,} deliveries, "
                    f"{len(w.same_second)} objects last updated twice in one second)"
                    for w in workloads
                )
                + f" in {time.perf_counter() - started:.0f} s; {os.cpu_count()} cores, "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            templates = {name: seed(name, events, postgres, sim[0]) for name in args.peers}
            # Peer after peer at each step, so that a machine busy with other work weighs on
            # every peer alike.
            for workload in workloads:
                for concurrency in args.concurrency:
                    for name in args.peers:
                        result = measure(
                            name,
                            templates[name],
                            workload,
                            events.seeds,
                            concurrency,
                            postgres,
                            sim,
                        )
                        results.append(result)
                        print(
                            f"{name} {workload.name} at {concurrency}: {result.rate:,.0f} "
                            f"events/s, CPU µs/event {result.app_us:,.0f} server, "
                            f"{result.db_us:,.0f} PostgreSQL, {result.stripe_us:,.0f} stripesim; "
                            f"{result.checked}",
                            flush=True,
                        )
    finally:
        postgres.close()
    report(results)
    if not all(r.correct for r in results):
        print("\nNot every peer ended at the right state: see 'correct' above.")


if __name__ == "__main__":
    main()
