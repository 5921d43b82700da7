"""What the bench scripts share: a `tollgate serve` subprocess, a database per run, CPU clocks.

Loaded by path (`bench/stripesim.py` shadows the simulator's package name, so the bench folder
stays off the import path).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from stripesim.testing import free_port
from tollgate.db.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "TOLLGATE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
API_KEY = "bench_write_key_0123456789abcdef"


def load(name: str) -> ModuleType:
    """Load bench/<name>.py by path, as `bench_<name>` (bench/ stays off the import path)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            upgrade(url)
            yield url
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def server(
    database_url: str, *, wrapper: tuple[str, ...] = (), **settings: str
) -> Iterator[tuple[str, int]]:
    """`tollgate serve` in a subprocess on a free port: yields its base URL and its pid.

    `wrapper`: a command the server runs under (`valgrind --tool=callgrind …`)."""
    port = free_port()
    env = {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": database_url,
        "TOLLGATE_CATALOG": str(REPO / "catalog.example.yaml"),
        "TOLLGATE_API_KEYS": f"bench:write:{API_KEY}",
        "STRIPE_SECRET_KEY": "sk_test_bench_no_calls_expected",
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        **settings,
    }
    argv = [*wrapper, sys.executable, "-m", "tollgate.cli", "serve", "--port", str(port)]
    base_url = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as workdir,
        serving(
            argv,
            env,
            f"{base_url}/healthz",
            cwd=workdir,
            name="tollgate serve",
            startup_seconds=600 if wrapper else 60,  # callgrind starts a server slowly
        ) as pid,
    ):
        yield base_url, pid


@contextmanager
def serving(
    argv: list[str],
    env: dict[str, str],
    health_url: str,
    *,
    cwd: str | Path | None = None,
    name: str = "the server",
    headers: dict[str, str] | None = None,
    output: Any = subprocess.DEVNULL,
    startup_seconds: float = 60,
) -> Iterator[int]:
    """Run a server process until the block ends: yield its pid once `health_url` answers 200
    (sent with `headers`), then SIGINT it and wait for it (SIGKILL after 30 s)."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                if httpx.get(health_url, headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.1)
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; Linux only, else 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_commits(base_url: str, writer: str) -> tuple[float, float]:
    """The commits a served process's group-commit `writer` made so far, and the items in
    them (tollgate-webhooks, tollgate-consume), read from its /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    found = {"commits": 0.0, "commit_items": 0.0}
    for name in found:
        match = re.search(rf'^tollgate_group_{name}_total{{writer="{writer}"}} (\S+)$', text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found["commits"], found["commit_items"]


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def offline_pro_customers(base_url: str, count: int) -> None:
    """Sign up `count` offline Pro customers, org-0 to org-{count-1}, through the API."""
    with httpx.Client(base_url=base_url, headers=headers(), timeout=60) as http:
        for index in range(count):
            body = {"id": f"org-{index}", "email": f"o{index}@bench.example", "offline": True}
            http.post("/v1/customers", json={**body, "plan": "pro"}).raise_for_status()


def run_clients(
    target: Callable[..., None], args: tuple[Any, ...], processes: int, server_pid: int
) -> tuple[list[Any], float, float]:
    """Run `processes` client processes, each `target(*args, results)` putting one outcome on
    the queue; return the outcomes, the wall time and the server's CPU seconds meanwhile."""
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [
        multiprocessing.Process(target=target, args=(*args, results)) for _ in range(processes)
    ]
    cpu = process_cpu_seconds(server_pid)
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = [results.get() for _ in workers]
    elapsed = time.perf_counter() - started
    cpu = process_cpu_seconds(server_pid) - cpu
    for worker in workers:
        worker.join()
    return outcomes, elapsed, cpu


class InProcessApp:
    """Tollgate's ASGI app over a database, called directly: no server, no client process, so
    the CPU a bench reads (`time.process_time`, every thread of this process) is Tollgate's own.

    Another build runs with this venv and a bench script by putting its sources first
    (`PYTHONPATH=/work/old/src:/work/old/clients/python/src`): this keeps to the app factory and
    the public HTTP API, and takes the catalog of the build that is imported.
    """

    def __init__(self, database_url: str, **settings: str) -> None:
        import tollgate
        from tollgate.api.app import create_app
        from tollgate.bootstrap import build_container
        from tollgate.config import Settings

        catalog = Path(tollgate.__file__).resolve().parents[2] / "catalog.example.yaml"
        os.environ.update(
            {
                "TOLLGATE_ENV": "test",
                "TOLLGATE_DATABASE_URL": database_url,
                "TOLLGATE_CATALOG": str(catalog),
                "TOLLGATE_API_KEYS": f"bench:write:{API_KEY}",
                "STRIPE_SECRET_KEY": "sk_test_bench_no_calls_expected",
                "STRIPE_API_BASE": "http://127.0.0.1:9",
                **settings,  # a bench's own Stripe (stripesim) among them
            }
        )
        self.container = build_container(Settings())
        self.app = create_app(self.container)
        self.authorization = f"Bearer {API_KEY}".encode()
        # As `tollgate serve` sets it (tollgate/server.py).
        sys.setswitchinterval(0.0005)

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        query: bytes = b"",
    ) -> tuple[int, bytes]:
        """One request through the whole app; its status and body."""
        sent = [(b"host", b"127.0.0.1")]
        sent += headers if headers is not None else [(b"authorization", self.authorization)]
        if body:
            sent += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "headers": sent,
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never goes away
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return statuses[0], b"".join(chunks)

    async def sign_up(self, count: int) -> None:
        """Sign up `count` offline Pro customers, org-0 to org-{count-1}, through the API."""
        for index in range(count):
            body = {"id": f"org-{index}", "email": f"o{index}@bench.example", "offline": True}
            status, answer = await self.call(
                "POST", "/v1/customers", orjson.dumps({**body, "plan": "pro"})
            )
            assert status in (200, 201), (status, answer)

    def close(self) -> None:
        self.container.close()


@contextmanager
def callgrind(on: bool) -> Iterator[None]:
    """Count instructions for the block only, when running under callgrind
    (`valgrind --tool=callgrind --instr-atstart=no …`; read "Collected")."""
    if on:
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True)
    try:
        yield
    finally:
        if on:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True)


def in_process_arguments(
    doc: str | None, count: str, default: int, concurrency: int, *, statements: bool = False
) -> argparse.Namespace:
    """An in-process bench's arguments: how many (`--<count>`), how many in flight, the
    database, whether to count instructions under callgrind and, for a bench that can,
    whether to count the statements each call runs (`statements`: `--statements`)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--callgrind", action="store_true")
    if statements:
        parser.add_argument("--statements", action="store_true")
    return parser.parse_args()


class Statements:
    """Counts the statements this process's database connections run while `on`, by kind
    ("INSERT stripe_events", "SELECT customers"), on the driver's cursors: Tollgate runs its
    hot statements there, past SQLAlchemy's events. On SQLite every statement the library
    steps (sqlite3's trace callback); on PostgreSQL every execute on a psycopg cursor. Either
    way an executemany counts a statement per row, and the drivers' own BEGIN and COMMIT are
    left out (count the commits apart). Made before the app, whose connections it watches."""

    _SKIPPED = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.on = False
        sa.event.listen(sa.engine.Engine, "connect", self._connected)

    def close(self) -> None:
        sa.event.remove(sa.engine.Engine, "connect", self._connected)

    def _connected(self, connection: Any, _record: Any) -> None:
        if hasattr(connection, "set_trace_callback"):  # sqlite3
            connection.set_trace_callback(self._seen)
            return
        seen = self._seen

        class Counting(connection.cursor_factory):  # type: ignore[name-defined,misc]
            def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
                seen(str(query))
                return super().execute(query, params, **options)

            def executemany(self, query: Any, params_seq: Any, **options: Any) -> Any:
                rows = list(params_seq)
                for _ in rows:
                    seen(str(query))
                return super().executemany(query, rows, **options)

        connection.cursor_factory = Counting

    def _seen(self, sql: str) -> None:
        if not self.on:
            return
        words = sql.split(None, 1)
        verb = words[0].upper() if words else ""
        if verb in self._SKIPPED:
            return
        kind = f"{verb} {_table_of(verb, sql)}"
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def report(self, calls: int, what: str) -> str:
        """The statements a call ran, in all and by kind, most first."""
        total = sum(self.counts.values())
        kinds = sorted(self.counts.items(), key=lambda pair: (-pair[1], pair[0]))
        lines = [f"{total / calls:.2f} statements per {what}:"]
        lines += [f"  {count / calls:6.3f}  {kind}" for kind, count in kinds]
        return "\n".join(lines)


def _table_of(verb: str, sql: str) -> str:
    """The table a statement writes, or the first it reads."""
    found = re.search(
        r"\b(?:INTO|FROM)\s+\"?(\w+)" if verb != "UPDATE" else r"UPDATE\s+\"?(\w+)",
        sql,
        re.IGNORECASE,
    )
    return found.group(1) if found else "?"


def run_in_process(
    kind: str, measure: Callable[[InProcessApp], Coroutine[Any, Any, None]], **settings: str
) -> None:
    """Run `measure` over the in-process app on a fresh database of `kind`."""
    with database(kind) as url:
        app = InProcessApp(url, **settings)
        try:
            asyncio.run(measure(app))
        finally:
            app.close()
