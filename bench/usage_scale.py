"""Measure usage at scale: N raw usage events over months and customers, then what it costs.

Loads `--events` usage events (default 100,000,000) spread evenly over `--customers` offline Pro
customers and the `--months` months before now, on PostgreSQL by COPY straight into the
monthly partitions (and their ids into `usage_event_ids`), then builds the hourly roll-up as
recording would have (one INSERT … SELECT … GROUP BY). With that table behind it, it prints:

- ingestion through Tollgate's real path: `POST /v1/usage` batches of 1,000 new events from two
  client processes to one `tollgate serve` for `--seconds` (a sample on top of the N events);
- a customer's usage page: `GET /v1/customers/{id}/usage/history` by day over a past month and
  by hour over a day (what the billing page's chart reads too: the hourly roll-up), p50 and p99
  of `--requests` requests each, a different customer each time;
- the database size per million events: raw events (partitions and their index), ids, the
  hourly roll-up.

Run: `.venv/bin/python bench/usage_scale.py [--events 10000000] [--customers 1000]
[--months 12] [--seconds 10] [--requests 300] [--database postgresql|sqlite]`
Watch the disk: about 280 bytes an event on PostgreSQL (264 MiB a million at 10 M events; 28 GB
for 100 M: `df -h`). SQLite loads by INSERT (meant for a few million events at most).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from tollgate.db.queries.usage_storage import make_partitions, month_partitions  # noqa: E402


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
usage_bench = _load("usage")  # its client: batches of 1,000 new events, back to back

METERS = ("runs", "cpu_seconds", "storage_gb")
CHUNK = 200_000  # rows generated per COPY write


class Spread:
    """Event n's time: evenly over [begin, end) in whole microseconds (exact at month bounds)."""

    def __init__(self, events: int, months: int, now: datetime) -> None:
        begin = (now - timedelta(days=31 * months)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        self.events = events
        self.begin = begin
        self.start_us = int(begin.timestamp()) * 1_000_000
        self.span_us = int((now - timedelta(hours=1) - begin).total_seconds() * 1_000_000)

    def micros(self, n: int) -> int:
        return self.start_us + n * self.span_us // self.events

    def first_at_or_after(self, moment: datetime) -> int:
        """The first event whose time is at or after `moment`."""
        target = int(moment.timestamp()) * 1_000_000
        low, high = 0, self.events
        while low < high:
            middle = (low + high) // 2
            if self.micros(middle) < target:
                low = middle + 1
            else:
                high = middle
        return low

    def rows(self, first: int, stop: int, customers: int) -> list[tuple[str, str, str, int, str]]:
        """Events first..stop-1: id, customer, meter, value, time (ISO 8601, UTC)."""
        found = []
        for n in range(first, stop):
            micros = self.micros(n)
            at = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
                microsecond=micros % 1_000_000
            )
            found.append(
                (
                    f"evt_{n:020x}",
                    f"org-{n % customers}",
                    METERS[(n // customers) % 3],
                    1 + n % 9,
                    at.isoformat(),
                )
            )
        return found


def load_postgres(url: str, spread: Spread, customers: int) -> float:
    """COPY the events straight into their monthly partitions; return the seconds it took."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        make_partitions(connection, first=spread.begin, last=datetime.now(UTC) + timedelta(days=62))
        partitions = month_partitions(connection)
    engine.dispose()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")  # libpq reads the options
    started = time.perf_counter()
    done = 0
    with psycopg.connect(dsn, autocommit=True) as connection:
        for partition in partitions:
            low = spread.first_at_or_after(partition.start)
            high = spread.first_at_or_after(partition.end)
            for first in range(low, high, CHUNK):
                rows = spread.rows(first, min(first + CHUNK, high), customers)
                events = "".join(f"{i}\t{c}\t{m}\t{v}\t{at}\t{at}\n" for i, c, m, v, at in rows)
                ids = "".join(f"{i}\t{at}\n" for i, _, _, _, at in rows)
                with connection.transaction(), connection.cursor() as cursor:
                    with cursor.copy(
                        f'COPY "{partition.name}" (id, customer_id, meter, value, occurred_at,'
                        " recorded_at) FROM STDIN"
                    ) as copy:
                        copy.write(events)
                    with cursor.copy("COPY usage_event_ids (id, occurred_at) FROM STDIN") as copy:
                        copy.write(ids)
                done += len(rows)
                if done // 2_000_000 != (done - len(rows)) // 2_000_000:
                    rate = done / (time.perf_counter() - started)
                    print(f"  loaded {done:,} events ({rate:,.0f}/s)", flush=True)
        connection.execute(
            "INSERT INTO usage_hourly (customer_id, meter, hour, quantity, events, peak)"
            " SELECT customer_id, meter, date_trunc('hour', occurred_at AT TIME ZONE 'UTC')"
            " AT TIME ZONE 'UTC', sum(value), count(*), max(value) FROM usage_events"
            " GROUP BY 1, 2, 3"
        )
        connection.execute("VACUUM ANALYZE")
    assert done == spread.events, (done, spread.events)
    return time.perf_counter() - started


def load_sqlite(url: str, spread: Spread, customers: int) -> float:
    """INSERT the events in one transaction, then roll them up; return the seconds it took."""
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        for first in range(0, spread.events, CHUNK):
            rows = spread.rows(first, min(first + CHUNK, spread.events), customers)
            connection.exec_driver_sql(
                "INSERT INTO usage_events (id, customer_id, meter, value, occurred_at,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(i, c, m, v, _sqlite(at), _sqlite(at)) for i, c, m, v, at in rows],
            )
        connection.exec_driver_sql(
            "INSERT INTO usage_hourly (customer_id, meter, hour, quantity, events, peak)"
            " SELECT customer_id, meter, substr(occurred_at, 1, 13) || ':00:00.000000',"
            " sum(value), count(*), max(value) FROM usage_events GROUP BY 1, 2, 3"
        )
    engine.dispose()
    return time.perf_counter() - started


def _sqlite(at: str) -> str:
    return datetime.fromisoformat(at).replace(tzinfo=None).isoformat(" ", "microseconds")


def sizes(url: str, kind: str) -> dict[str, int]:
    """Bytes on disk: raw events (with their index), ids, the hourly roll-up."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        if kind == "sqlite":
            found = dict(
                connection.exec_driver_sql(
                    "SELECT name, sum(pgsize) FROM dbstat WHERE name IN ('usage_events',"
                    " 'ix_usage_events_occurred_at', 'sqlite_autoindex_usage_events_1',"
                    " 'usage_hourly', 'sqlite_autoindex_usage_hourly_1') GROUP BY name"
                ).all()
            )
            result = {
                "raw events": found.get("usage_events", 0)
                + found.get("ix_usage_events_occurred_at", 0),
                "ids": found.get("sqlite_autoindex_usage_events_1", 0),
                "hourly roll-up": found.get("usage_hourly", 0)
                + found.get("sqlite_autoindex_usage_hourly_1", 0),
            }
        else:
            raw = connection.exec_driver_sql(
                "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
                " WHERE inhparent = 'usage_events'::regclass"
            ).scalar_one()
            ids, hourly = connection.exec_driver_sql(
                "SELECT pg_total_relation_size('usage_event_ids'),"
                " pg_total_relation_size('usage_hourly')"
            ).one()
            result = {"raw events": int(raw), "ids": int(ids), "hourly roll-up": int(hourly)}
    engine.dispose()
    return result


def page_latency(base_url: str, customers: int, now: datetime, requests: int) -> dict[str, Any]:
    """p50 and p99 (ms) of a customer's usage history: by day over the past month, by hour
    over a day; a different customer each request."""
    month = (
        now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    ).replace(day=1)
    asks = {
        "history by day, a month": ("day", month, month + timedelta(days=31)),
        "history by hour, a day": ("hour", month + timedelta(days=9), month + timedelta(days=10)),
    }
    found: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, headers=harness.headers(), timeout=60) as http:
        for name, (granularity, start, end) in asks.items():
            times = []
            for n in range(requests + 20):
                params = {
                    "meter": "runs",
                    "granularity": granularity,
                    "from": start.isoformat().replace("+00:00", "Z"),
                    "to": end.isoformat().replace("+00:00", "Z"),
                }
                began = time.perf_counter()
                answer = http.get(
                    f"/v1/customers/org-{(n * 31) % customers}/usage/history", params=params
                )
                took = time.perf_counter() - began
                answer.raise_for_status()
                if n >= 20:  # after a warm-up
                    times.append(took * 1000)
                buckets = answer.json()
            times.sort()
            total = sum(bucket.get("value", 0) for bucket in buckets.get("buckets", []))
            found[name] = (statistics.median(times), times[int(len(times) * 0.99) - 1], total)
    return found


@contextmanager
def serving(url: str) -> Iterator[tuple[str, int]]:
    """`tollgate serve` on the loaded database; tried five times (a busy machine may take
    longer than the harness waits for its first answer)."""
    for attempt in range(5):
        with ExitStack() as stack:
            try:
                started = stack.enter_context(harness.server(url))
            except RuntimeError:
                if attempt == 4:
                    raise
                continue
            yield started
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    now = datetime.now(UTC)
    print(
        f"usage at scale on {args.database}: {args.events:,} events, {args.customers:,} "
        f"customers, {args.months} months (load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}, {os.cpu_count()} cores)",
        flush=True,
    )
    with harness.database(args.database) as url:
        with serving(url) as (base_url, pid):
            harness.offline_pro_customers(base_url, args.customers)
        loader = load_postgres if args.database == "postgresql" else load_sqlite
        took = loader(url, Spread(args.events, args.months, now), args.customers)
        print(f"loaded {args.events:,} events and rolled them up in {took:,.0f} s", flush=True)
        with serving(url) as (base_url, pid):
            outcomes, elapsed, cpu = harness.run_clients(
                usage_bench._client, (base_url, args.seconds), 2, pid
            )
            accepted = sum(count for count, _ in outcomes)
            print(
                f"ingestion through POST /v1/usage on top of them: {accepted / elapsed:,.0f} "
                f"events/s ({accepted:,} in {elapsed:.1f} s, 2 clients, batches of 1,000); "
                f"server CPU {cpu / max(accepted, 1) * 1e6:.1f} µs per event",
                flush=True,
            )
            for name, (p50, p99, total) in page_latency(
                base_url, args.customers, now, args.requests
            ).items():
                print(f"usage page, {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms (sum {total:,})")
        found = sizes(url, args.database)
        millions = args.events / 1e6
        parts = ", ".join(
            f"{name} {size / millions / 2**20:,.1f} MiB" for name, size in found.items()
        )
        print(
            f"database size per million events: {sum(found.values()) / millions / 2**20:,.1f} MiB"
            f" ({parts})"
        )


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
