"""Measure `consume` (check and record in one step): over HTTP from 32 connections to one
`tollgate serve` process, and in process (`LocalTollgate`) with the counters in Redis.

HTTP: 32 connections kept busy with `POST /v1/customers/{id}/consume` (one unit, a fresh id
each), for one of 200 customers on the Pro plan (a soft limit: each use is allowed, counted, and
its answer stored); the load generator is `wrk` (one thread) when it is installed, else two
client processes of 16 httpx connections each (which take far more CPU per call than the
server: on 2 cores they, not the server, set the figure). The bench then checks the database:
the events and the stored answers equal the allowed answers. It also shows how the server's
threads spent the run (Linux's schedstat): running, waiting for a CPU the machine's other work
held, and neither (idle: waiting for the clients, or for one another), which a loaded machine
blurs far less than the consumes a second.

In process: one thread calls `LocalTollgate.consume` back to back on a container counting in
Redis, for one of 200 customers (after one unmeasured call each: counters built, terms kept);
the latency of each call is kept. With `--callgrind`, on `--database` only: divide the
instructions (every thread's) by the consumes shown.

Groups: the CPU one process spends per consume when 1, 8, 32 or 128 calls wait together and
share a transaction (the consume writer's group commit), on SQLite and PostgreSQL.

ASGI: the HTTP bench's calls from 32 in flight sent straight to the app's ASGI callable (every
middleware, the consume fast path, the consume writer's thread and its group commits) with no
HTTP server and no client process, on SQLite (or `--database postgresql`): the CPU
(`time.process_time`, every thread) is Tollgate's own, and the mean group the writer committed
is shown. `--callgrind` switches callgrind's instrumentation on for the measured calls only:
run `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes .venv/bin/python
bench/consume.py --only asgi --callgrind --calls 3000` and divide each thread's instructions by
the calls to compare builds (under callgrind the threads take turns, so groups differ from a
real run's: compare at equal groups).

Writer: the consume writer's work per call at a fixed group of 20 calls (about what the ASGI
bench's 32 in flight make; `--group N` for another size, 1 for a lone caller's), keeping its
customers and terms from group to group as the writer does, on one thread: `--only writer
--callgrind --calls 3000 [--group 20] [--database postgresql]` under the same valgrind command
gives instructions per consume that compare between builds at equal groups.

Floor: what this machine gives before any Tollgate code runs: the same wrk load against a bare
ASGI app under uvicorn answering a fixed consume answer (the most one Python server process
answers here), one Redis script round trip, and one bare insert and commit on SQLite and on
PostgreSQL (what a lone in-process caller must wait for at least).

Run: `.venv/bin/python bench/consume.py [--seconds 10]
[--only sqlite|postgresql|local|groups|floor|asgi|writer] [--calls 20000] [--callgrind]
[--database sqlite|postgresql] [--group 20] [--statements]` (`--database`: the ASGI and
writer figures' database; `--group`, `--statements`: the writer's)
Targets (2 cores): 8,000 a second with p99 under 10 ms on SQLite, 4,000 on PostgreSQL; under
50 µs a call in process with Redis counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import multiprocessing
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

CUSTOMERS = 200
CONNECTIONS = 32
PROCESSES = 2
WRITER = "tollgate-consume"  # the group-commit writer whose commits the metrics count
REDIS_URL = os.environ.get("TOLLGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _client(base_url: str, seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    results.put(asyncio.run(_connections(base_url, seconds)))


async def _connections(base_url: str, seconds: float) -> tuple[int, list[float]]:
    prefix = secrets.token_hex(4)
    limits = httpx.Limits(max_connections=CONNECTIONS // PROCESSES)
    async with httpx.AsyncClient(
        base_url=base_url, headers=harness.headers(), timeout=60, limits=limits
    ) as http:
        deadline = time.monotonic() + seconds

        async def connection(lane: int) -> tuple[int, list[float]]:
            allowed, latencies, n = 0, [], 0
            while time.monotonic() < deadline:
                n += 1
                customer = f"org-{(lane * 7919 + n) % CUSTOMERS}"
                body = {"feature": "runs", "quantity": 1, "id": f"{prefix}-{lane}-{n}"}
                started = time.perf_counter()
                answer = await http.post(f"/v1/customers/{customer}/consume", json=body)
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()
                allowed += answer.json()["allowed"]
            return allowed, latencies

        lanes = await asyncio.gather(*(connection(i) for i in range(CONNECTIONS // PROCESSES)))
    return sum(a for a, _ in lanes), [value for _, found in lanes for value in found]


# wrk's Lua: a fresh id per request (a run prefix, then a counter), customers in turn; each
# answer's `"allowed":true` is counted (a Pro customer's soft limit allows every call).
WRK_SCRIPT = """
n, allowed, others = 0, 0, 0  -- globals: done() reads them with thread:get
local prefix = "{prefix}"
request = function()
  n = n + 1
  local body = '{{"feature":"runs","quantity":1,"id":"' .. prefix .. n .. '"}}'
  return wrk.format("POST", "/v1/customers/org-" .. (n % {customers}) .. "/consume", nil, body)
end
response = function(status, headers, body)
  if status == 200 and string.find(body, '"allowed":true', 1, true) then
    allowed = allowed + 1
  else
    others = others + 1
  end
end
done = function(summary, latency, requests)
  local a, o = 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("allowed")
    o = o + thread:get("others")
  end
  io.write(string.format("allowed %d others %d\\n", a, o))
end
setup = function(thread) table.insert(threads, thread) end
threads = {{}}
"""


def _wrk(base_url: str, seconds: float) -> tuple[int, int, float, float, float, float]:
    """Run wrk: (answers allowed, answers not allowed, seconds, p50, p99, requests/s)."""
    script_text = WRK_SCRIPT.format(prefix=secrets.token_hex(4), customers=CUSTOMERS)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(script_text)
        script.flush()
        command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
        command += ["--timeout", "30s"]  # a timed-out call is sent again: counted twice
        command += ["-s", script.name, "-H", f"Authorization: {harness.headers()['Authorization']}"]
        command += ["-H", "Content-Type: application/json", base_url]
        ran = subprocess.run(command, capture_output=True, text=True, check=False)
    out = ran.stdout
    if ran.returncode != 0:
        raise SystemExit(f"wrk failed ({ran.returncode}):\n{ran.stdout}{ran.stderr}")
    counted = re.search(r"allowed (\d+) others (\d+)", out)
    taken = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if counted is None or taken is None or rate is None:
        raise SystemExit(f"could not read wrk's report:\n{out}")
    elapsed = float(taken.group(2)) * (0.001 if taken.group(3) == "ms" else 1.0)
    p50, p99 = (_wrk_seconds(out, percentile) for percentile in ("50%", "99%"))
    return int(counted.group(1)), int(counted.group(2)), elapsed, p50, p99, float(rate.group(1))


def _wrk_seconds(report: str, percentile: str) -> float:
    found = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", report)
    if found is None:
        raise SystemExit(f"no {percentile} latency in wrk's report:\n{report}")
    return float(found.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[found.group(2)]


def _recorded(url: str) -> tuple[int, int]:
    """How many usage events and stored consume answers the database holds."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            events, answers = connection.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM usage_events),"
                    " (SELECT count(*) FROM usage_consumptions)"
                )
            ).one()
    finally:
        engine.dispose()
    return int(events), int(answers)


def over_http(kind: str, seconds: float) -> None:
    if shutil.which("wrk") is not None:
        return over_http_wrk(kind, seconds)
    with harness.database(kind) as url, harness.server(url) as (base_url, pid):
        harness.offline_pro_customers(base_url, CUSTOMERS)
        outcomes, elapsed, cpu = harness.run_clients(_client, (base_url, seconds), PROCESSES, pid)
        allowed = sum(count for count, _ in outcomes)
        latencies = [value for _, found in outcomes for value in found]
        events, answers = _recorded(url)
    if not events == answers == allowed == len(latencies):
        raise SystemExit(f"{allowed:,} allowed but {events:,} events, {answers:,} answers")
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{kind} over HTTP: {len(latencies) / elapsed:,.0f} consumes/s over {elapsed:.1f} s "
        f"from {CONNECTIONS} connections ({PROCESSES} client processes); latency p50 "
        f"{q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms\n"
        f"  server process: {cpu / elapsed:.0%} of one core, "
        f"{cpu / max(len(latencies), 1) * 1e6:.0f} µs CPU per consume; checked: events and "
        f"stored answers equal the {allowed:,} allowed",
        flush=True,
    )


def over_http_wrk(kind: str, seconds: float) -> None:
    """`over_http` with wrk as the load generator (one thread, 32 connections)."""
    with harness.database(kind) as url, harness.server(url) as (base_url, pid):
        harness.offline_pro_customers(base_url, CUSTOMERS)
        _wrk(base_url, 1.0)  # warm up: the writer thread, the connections, the caches
        time.sleep(0.5)  # the warm-up's last calls, sent as wrk stopped, are recorded by now
        warm_events, warm_answers = _recorded(url)
        commits, items = harness.group_commits(base_url, WRITER)
        cpu, scheduled = harness.process_cpu_seconds(pid), _scheduled(pid)
        allowed, others, elapsed, p50, p99, rate = _wrk(base_url, seconds)
        cpu = harness.process_cpu_seconds(pid) - cpu
        ran, queued = (now - then for now, then in zip(_scheduled(pid), scheduled, strict=True))
        now_commits, now_items = harness.group_commits(base_url, WRITER)
        commits, items = now_commits - commits, now_items - items
        events, answers = _recorded(url)
    events, answers = events - warm_events, answers - warm_answers
    # wrk stops at its deadline with up to one call per connection sent and not yet read: the
    # server may have recorded those too.
    if others or events != answers or not allowed <= events <= allowed + CONNECTIONS:
        raise SystemExit(
            f"{allowed:,} allowed ({others:,} other answers) but {events:,} events, "
            f"{answers:,} answers"
        )
    print(
        f"{kind} over HTTP: {rate:,.0f} consumes/s over {elapsed:.1f} s from {CONNECTIONS} "
        f"connections (wrk); latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms\n"
        f"  server process: {cpu / elapsed:.0%} of one core, "
        f"{cpu / max(events, 1) * 1e6:.0f} µs CPU per consume, {items / max(commits, 1):.1f} "
        f"calls a commit; checked: events and stored answers equal the {allowed:,} allowed "
        f"(+{events - allowed} sent at the end)\n"
        f"  its threads ran {ran / elapsed:.0%} of the time and waited for a CPU "
        f"{queued / elapsed:.0%} (the machine's other work); idle, or waiting on each other, "
        f"{max(0.0, 1 - (ran + queued) / elapsed):.0%}",
        flush=True,
    )


def _scheduled(pid: int) -> tuple[float, float]:
    """Seconds the process's threads (those alive now) have run, and waited for a CPU while
    runnable (Linux's schedstat; zeros elsewhere). With one interpreter lock at most one
    thread runs Python: what the two leave of the wall time is the process idle, waiting
    for its clients or for a thread to take over."""
    ran = queued = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        ran, queued = ran + int(fields[0]), queued + int(fields[1])
    return ran / 1e9, queued / 1e9


BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"id":"x","customer":"org-1","quantity":1,"allowed":true,"code":"allowed"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def floor(seconds: float) -> None:
    """What the machine gives before any Tollgate code: HTTP, a Redis round trip, a commit."""
    if shutil.which("wrk") is not None:
        port = harness.free_port()
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "bare.py").write_text(BARE_APP)
            argv = [sys.executable, "-m", "uvicorn", "bare:app", "--port", str(port)]
            argv += ["--log-level", "warning", "--no-access-log"]
            env = {**os.environ, "PYTHONPATH": folder}
            base_url = f"http://127.0.0.1:{port}"
            with harness.serving(argv, env, base_url, cwd=folder, name="uvicorn") as pid:
                _wrk(base_url, 1.0)
                cpu = harness.process_cpu_seconds(pid)
                allowed, _, _, p50, p99, rate = _wrk(base_url, seconds)
                cpu = harness.process_cpu_seconds(pid) - cpu
        print(
            f"floor, a bare ASGI app answering a fixed consume answer (uvicorn, wrk, "
            f"{CONNECTIONS} connections): {rate:,.0f} requests/s, p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms; {cpu / max(allowed, 1) * 1e6:.0f} µs server CPU a "
            "request",
            flush=True,
        )
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    key = f"bench-floor-{secrets.token_hex(4)}"
    script = client.register_script("return redis.call('HINCRBY', KEYS[1], 'v', 1)")
    _per_call("floor, one Redis script round trip (HINCRBY)", lambda: script(keys=[key]))
    client.delete(key)
    client.close()
    with tempfile.TemporaryDirectory() as folder:
        import sqlite3

        connection = sqlite3.connect(Path(folder, "floor.db"), isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # as Tollgate's SQLite connections
        connection.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
        count = iter(range(10**9))

        def commit() -> None:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t VALUES (?)", (str(next(count)),))
            connection.execute("COMMIT")

        _per_call("floor, one bare SQLite insert and commit (sqlite3, WAL)", commit)
        connection.close()
    with harness.database("postgresql") as url:
        engine = sa.create_engine(url)
        with engine.connect() as pg:
            pg.exec_driver_sql("CREATE TABLE floor_commits (id TEXT PRIMARY KEY)")
            pg.commit()
            raw = pg.connection.driver_connection
            assert raw is not None

            def pg_commit() -> None:
                raw.execute("INSERT INTO floor_commits VALUES (%s)", (str(next(count)),))
                raw.commit()

            _per_call("floor, one bare PostgreSQL insert and commit (psycopg)", pg_commit, 300)
        engine.dispose()


def _per_call(label: str, call: Callable[[], object], rounds: int = 5000) -> None:
    call()
    latencies = []
    cpu = time.process_time()
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{label}: {cpu / rounds * 1e6:.0f} µs CPU a call (client side), p50 "
        f"{q[49] * 1e6:.0f} µs, p99 {q[98] * 1e6:.0f} µs",
        flush=True,
    )


def in_process(kind: str, seconds: float, on: bool = False, threads: int = 1) -> None:
    from tollgate.bootstrap import build_container
    from tollgate.client.local import LocalTollgate
    from tollgate.config import load_settings

    prefix = f"bench-{secrets.token_hex(4)}:"
    with harness.database(kind) as url:
        app = build_container(
            load_settings(
                TOLLGATE_ENV="test",
                TOLLGATE_DATABASE_URL=url,
                TOLLGATE_CATALOG=str(harness.REPO / "catalog.example.yaml"),
                STRIPE_SECRET_KEY="",
                TOLLGATE_REDIS_URL=REDIS_URL,
                TOLLGATE_REDIS_PREFIX=prefix,
            )
        )
        try:
            tollgate = LocalTollgate(app)
            for index in range(CUSTOMERS):
                tollgate.create_customer(
                    f"org-{index}", email=f"o{index}@bench.example", offline=True, plan="pro"
                )
            # Warm up, unmeasured: each customer's counter built in Redis and its terms kept
            # (under callgrind a run is a few hundred calls: each would otherwise be a first).
            for index in range(CUSTOMERS):
                tollgate.consume(f"org-{index}", "runs", 1, id=f"{prefix}warm-{index}")
            lanes_latencies: list[list[float]] = [[] for _ in range(threads)]
            deadline = time.monotonic() + seconds

            def lane(index: int) -> None:
                kept, n = lanes_latencies[index], index
                while time.monotonic() < deadline:
                    n += threads
                    started = time.perf_counter()
                    tollgate.consume(f"org-{n % CUSTOMERS}", "runs", 1, id=f"{prefix}{n}")
                    kept.append(time.perf_counter() - started)

            with harness.callgrind(on):
                cpu, wall = time.process_time(), time.perf_counter()
                if threads == 1:
                    lane(0)
                else:
                    workers = [threading.Thread(target=lane, args=(k,)) for k in range(threads)]
                    for worker in workers:
                        worker.start()
                    for worker in workers:
                        worker.join()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            latencies = [latency for kept in lanes_latencies for latency in kept]
            groups, grouped = app.consume_writer.groups()
            counters = app.usage_counters
            assert counters is not None
            keys = list(counters.scan())
            in_redis = sum(int(counters.client.hget(key, "v") or 0) for key in keys)
            if keys:
                counters.client.delete(*keys)
        finally:
            app.close()
    if in_redis != len(latencies) + CUSTOMERS:
        raise SystemExit(f"{len(latencies) + CUSTOMERS:,} consumed but Redis counted {in_redis:,}")
    q = statistics.quantiles(latencies, n=100)
    if threads == 1:
        print(
            f"{kind}+redis in process: {len(latencies):,} consumes, mean "
            f"{statistics.fmean(latencies) * 1e6:.0f} µs, p50 {q[49] * 1e6:.0f} µs, "
            f"p99 {q[98] * 1e6:.0f} µs a call (one thread), {cpu / len(latencies) * 1e6:.0f} µs "
            "CPU a call (this process); checked: Redis counted each once",
            flush=True,
        )
        return
    print(
        f"{kind}+redis in process, {threads} threads: {len(latencies):,} consumes, "
        f"{len(latencies) / wall:,.0f}/s ({wall / len(latencies) * 1e6:.1f} µs a consume), "
        f"{cpu / len(latencies) * 1e6:.1f} µs CPU a consume (this process, every thread), "
        f"a call's p50 {q[49] * 1e6:.0f} µs, p99 {q[98] * 1e6:.0f} µs, "
        f"{grouped / max(groups, 1):.1f} calls a group on average; "
        "checked: Redis counted each once",
        flush=True,
    )


@contextlib.contextmanager
def _signed_up(kind: str) -> Iterator[Any]:
    """A container on a fresh database of `kind`, with the bench's customers on the Pro plan."""
    from tollgate.bootstrap import build_container
    from tollgate.client.local import LocalTollgate
    from tollgate.config import load_settings

    with harness.database(kind) as url:
        app = build_container(
            load_settings(
                TOLLGATE_ENV="test",
                TOLLGATE_DATABASE_URL=url,
                TOLLGATE_CATALOG=str(harness.REPO / "catalog.example.yaml"),
                STRIPE_SECRET_KEY="",
            )
        )
        try:
            tollgate = LocalTollgate(app)
            for index in range(CUSTOMERS):
                tollgate.create_customer(
                    f"org-{index}", email=f"o{index}@bench.example", offline=True, plan="pro"
                )
            yield app
        finally:
            app.close()


def _group(size: int, first: int, prefix: str) -> list[Any]:
    from tollgate.services.usage import ConsumeCall

    return [
        ConsumeCall(f"org-{(first + k) % CUSTOMERS}", "runs", 1, f"{prefix}-{first + k}")
        for k in range(size)
    ]


def groups(kind: str, seconds: float) -> None:
    """CPU per consume of one group commit, by group size: what the writer thread spends when
    that many calls wait together (process CPU, so a loaded machine inflates it little)."""
    from tollgate.services.usage import consume_many

    with _signed_up(kind) as app:
        figures = []
        for size in (1, 8, 32, 128):
            started, count = time.process_time(), 0
            deadline = time.monotonic() + seconds / 4
            while time.monotonic() < deadline:
                calls = _group(size, count, f"g{size}")
                consume_many(
                    db=app.db, catalog=app.catalog, clock=app.clock, calls=calls, grace=app.grace
                )
                count += size
            cpu = time.process_time() - started
            figures.append(f"{size}: {cpu / count * 1e6:,.0f} µs")
    print(f"{kind} group commit, CPU per consume by group size: {', '.join(figures)}", flush=True)


# The writer bench's group: about what the ASGI bench's 32 calls in flight make.
WRITER_GROUP = 20


def writer(
    kind: str, calls: int, on: bool, size: int = WRITER_GROUP, statements: bool = False
) -> None:
    """The consume writer's work per call at a fixed group of `size`, keeping what the
    writer keeps from group to group (`Kept`), on one thread: CPU per consume, or under
    callgrind instructions that compare between builds (the ASGI bench's groups vary).
    `statements`: count the statements a group runs, by kind (commits apart)."""
    from tollgate.services.usage import consume_many
    from tollgate.services.usage.consume import Kept

    counted = harness.Statements() if statements else None  # made before the app's engine
    with _signed_up(kind) as app, app.db.pinned():
        # As the writer calls it: the same catalog, clock and grace, and what it keeps.
        decide = functools.partial(
            consume_many, db=app.db, catalog=app.catalog, clock=app.clock, grace=app.grace
        )
        kept, count = Kept(), 0

        def run(groups: int) -> None:
            nonlocal count
            for _ in range(groups):
                outcomes = decide(calls=_group(size, count, "w"), kept=kept)
                # `allowed`, not `decision.allowed`: an allowed answer's Decision is made only
                # when asked, and the server's answer is its JSON.
                assert all(o.allowed for o in outcomes), outcomes[:1]  # type: ignore[union-attr]
                count += size

        run(-(-CUSTOMERS // size))  # warm up: every counter made, every customer kept
        measured = max(calls // size, 1) * size
        if counted is not None:
            counted.on = True
        with harness.callgrind(on):
            cpu = time.process_time()
            run(measured // size)
            cpu = time.process_time() - cpu
        if counted is not None:
            counted.on = False
            counted.close()
    print(
        f"{kind} consume writer, groups of {size}: {measured:,} consumes, "
        f"{cpu / measured * 1e6:.1f} µs CPU per consume",
        flush=True,
    )
    if counted is not None:
        print(counted.report(measured // size, f"group of {size}"), flush=True)


def asgi(calls: int, on: bool, kind: str = "sqlite") -> None:
    """CPU per consume through the ASGI app in process, with the writer's mean group."""
    harness.run_in_process(kind, lambda app: _asgi_calls(app, calls, on, kind))


async def _asgi_calls(app: harness.InProcessApp, calls: int, on: bool, kind: str) -> None:
    import orjson

    await app.sign_up(CUSTOMERS)
    bodies = [
        orjson.dumps({"feature": "runs", "quantity": 1, "id": f"bench-{n}"})
        for n in range(CUSTOMERS + calls)
    ]
    paths = [f"/v1/customers/org-{n}/consume" for n in range(CUSTOMERS)]
    allowed = 0

    async def lane(numbers: range) -> None:
        nonlocal allowed
        for n in numbers:
            status, answer = await app.call("POST", paths[n % CUSTOMERS], bodies[n])
            assert status == 200, (status, answer[:500])
            allowed += orjson.loads(answer)["allowed"]

    def lanes(first: int, count: int) -> list[range]:
        return [range(first + i, first + count, CONNECTIONS) for i in range(CONNECTIONS)]

    # Warm up (statements compiled, caches filled, every counter made), then measure the rest.
    await asyncio.gather(*(lane(numbers) for numbers in lanes(0, CUSTOMERS)))
    writer = app.container.consume_writer
    groups, grouped = writer.groups()
    allowed = 0
    with harness.callgrind(on):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane(numbers) for numbers in lanes(CUSTOMERS, calls)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert allowed == calls, f"{allowed:,} of {calls:,} allowed"
    now_groups, now_grouped = writer.groups()
    groups, grouped = now_groups - groups, now_grouped - grouped
    print(
        f"{kind} through the ASGI app: {calls:,} consumes, {CONNECTIONS} in flight, "
        f"{cpu / calls * 1e6:.1f} µs CPU per consume, {calls / wall:,.0f} consumes/s, "
        f"{grouped / max(groups, 1):.1f} calls a group on average",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--only",
        choices=["sqlite", "postgresql", "local", "groups", "floor", "asgi", "writer"],
        default=None,
    )
    parser.add_argument("--calls", type=int, default=20000, help="asgi, writer: calls measured")
    parser.add_argument(
        "--callgrind", action="store_true", help="asgi, writer, local: count instructions"
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="asgi, writer (and local with --callgrind): on which",
    )
    parser.add_argument(
        "--group", type=int, default=WRITER_GROUP, help="writer: calls a group (1: a lone call)"
    )
    parser.add_argument(
        "--statements", action="store_true", help="writer: count the statements a group runs"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 32],
        help="local: threads calling consume at once (one figure each)",
    )
    args = parser.parse_args()
    if min(args.threads) < 1:
        parser.error("--threads must be 1 or more")
    if args.group < 1:
        parser.error("--group must be 1 or more")
    if args.only in (None, "sqlite"):
        over_http("sqlite", args.seconds)
    if args.only in (None, "postgresql"):
        over_http("postgresql", args.seconds)
    if args.only in (None, "groups"):
        groups("sqlite", args.seconds)
        groups("postgresql", args.seconds)
    if args.only in (None, "local"):
        for kind in [args.database] if args.callgrind else ["sqlite", "postgresql"]:
            for threads in args.threads:
                in_process(kind, args.seconds, args.callgrind, threads)
    if args.only in (None, "floor"):
        floor(args.seconds)
    if args.only in (None, "asgi"):
        asgi(args.calls, args.callgrind, args.database)
    if args.only in (None, "writer"):
        writer(args.database, args.calls, args.callgrind, args.group, args.statements)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
