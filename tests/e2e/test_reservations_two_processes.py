"""Reservations and consume racing across two `tollgate serve` processes on one PostgreSQL
database (and with Redis counters): holds taken on one process count on the other, and the
limit is never overshot."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from stripesim.testing import free_port
from tests.redis_space import redis_space
from tollgate.clock import SystemClock
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "catalog.example.yaml"
TOLLGATE = Path(sys.executable).parent / "tollgate"


@contextmanager
def tollgate_process(env: dict[str, str]) -> Iterator[str]:
    """Run `tollgate serve` in its own process; yield its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(TOLLGATE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise AssertionError(log.read().decode(errors="replace")[-3000:])
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "tollgate serve did not start"
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=15)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("counters", ["database", pytest.param("redis", marks=pytest.mark.redis)])
def test_holds_and_consumes_on_two_processes_never_overshoot(db: Database, counters: str) -> None:
    key = create_api_key(db=db, clock=SystemClock(), name="race", scope="write").secret
    env = {
        "TOLLGATE_ENV": "test",
        "TOLLGATE_DATABASE_URL": db.url,
        "TOLLGATE_CATALOG": str(EXAMPLE_CATALOG),
        "STRIPE_SECRET_KEY": "",
    }
    with ExitStack() as stack:
        if counters == "redis":
            env |= stack.enter_context(redis_space())
        urls = [stack.enter_context(tollgate_process(env)) for _ in range(2)]
        clients = [
            stack.enter_context(
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            )
            for url in urls
        ]
        created = clients[0].post(
            "/v1/customers", json={"id": "race", "email": "r@race.example", "offline": True}
        )
        assert created.status_code == 201, created.text
        ids = itertools.count()

        def worker(n: int) -> int:
            http = clients[n % 2]  # half the threads on each process
            committed = 0
            for _ in range(6):
                rid = f"r{n}-{next(ids)}"
                held = http.post(
                    "/v1/customers/race/reservations",
                    json={"feature": "runs", "quantity": 12, "ttl_seconds": 60, "id": rid},
                ).json()
                if held["status"] != "held":
                    used = http.post(
                        "/v1/customers/race/consume",
                        json={"feature": "runs", "quantity": 3, "id": f"c-{rid}"},
                    ).json()
                    committed += 3 if used["allowed"] else 0
                    continue
                other = clients[(n + 1) % 2]  # committed on the other process
                done = other.post(
                    f"/v1/customers/race/reservations/{rid}/commit",
                    json={"quantity": 8 + n % 8},  # under or over what is held
                ).json()
                if done["status"] == "held":
                    done = other.post(f"/v1/customers/race/reservations/{rid}/release").json()
                committed += done["committed"] or 0
            return committed

        with ThreadPoolExecutor(24) as pool:
            committed = sum(pool.map(worker, range(24)))
        runs = clients[1].get("/v1/customers/race/entitlements").json()["features"]["runs"]
        usage = clients[0].get("/v1/customers/race/usage").json()["meters"]["runs"]
    assert runs["held"] == 0
    assert usage["used"] == committed <= 1000
    assert committed > 900  # the limit was reached, not missed by a wide margin
