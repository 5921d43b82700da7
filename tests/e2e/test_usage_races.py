"""Issue 18, finding 3: the same usage ids from several clients at once, in different orders.

Four clients send the same events, each shuffled its own way, to two `tollgate serve`
processes on one database, with usage counted in the database or in Redis. Every answer must be
200 (an id another batch recorded first is a duplicate, never a deadlock or a unique-key 500),
and the totals exact: each event counted once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from stripesim.testing import free_port
from tests.conftest import EXAMPLE_CATALOG
from tests.redis_space import redis_space
from tollgate.db.unit_of_work import Database

KEY = "tg_write_usage_races_0123456789abcdef"
CLIENTS = 4
EVENTS = 120
ROUNDS = 3


@contextmanager
def server_process(env_extra: dict[str, str]) -> Iterator[str]:
    """Run `tollgate serve` as a process of its own; yield its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    env.update(
        TOLLGATE_ENV="test",
        TOLLGATE_CATALOG=str(EXAMPLE_CATALOG),
        TOLLGATE_API_KEYS=f"races:write:{KEY}",
        STRIPE_SECRET_KEY="",
        **env_extra,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tollgate.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "tollgate serve exited"
            assert time.monotonic() < deadline, "tollgate serve did not start"
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def two_servers_with_acme(env: dict[str, str]) -> Iterator[list[str]]:
    """Two `tollgate serve` processes on one database, with the customer acme on Pro made."""
    with ExitStack() as stack:
        servers = [stack.enter_context(server_process(env)) for _ in range(2)]
        created = httpx.post(
            f"{servers[0]}/v1/customers",
            json={"id": "acme", "email": "b@acme.example", "offline": True, "plan": "pro"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert created.status_code == 201, created.text
        yield servers


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def counting(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "database":
        yield {}
        return
    with redis_space() as settings:
        yield settings


def test_the_same_usage_ids_from_four_clients_in_different_orders_are_all_200_and_exact(
    db: Database, counting: dict[str, str]
) -> None:
    env = {"TOLLGATE_DATABASE_URL": db.url, **counting}
    headers = {"Authorization": f"Bearer {KEY}"}
    with two_servers_with_acme(env) as servers:
        answers: list[dict[str, Any]] = []
        sent = 0
        for round_ in range(ROUNDS):
            events = [
                {"id": f"r{round_}-e{i}", "customer": "acme", "meter": "runs", "value": 1}
                for i in range(EVENTS)
            ]
            sent += len(events)
            orders = [random.Random(round_ * 10 + n).sample(events, len(events)) for n in range(4)]

            def send(n: int, orders: list[list[dict[str, Any]]] = orders) -> list[httpx.Response]:
                # Two batches a client, so batches overlap in part, each in its own order.
                with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as http:
                    half = EVENTS // 2
                    return [
                        http.post("/v1/usage", json={"events": orders[n][:half]}),
                        http.post("/v1/usage", json={"events": orders[n][half:]}),
                    ]

            with ThreadPoolExecutor(CLIENTS) as pool:
                results = [answer for pair in pool.map(send, range(CLIENTS)) for answer in pair]
            for answer in results:
                assert answer.status_code == 200, answer.text
                answers.append(answer.json())
        usage = httpx.get(f"{servers[1]}/v1/customers/acme/usage", headers=headers).json()
    accepted = sum(a["accepted"] for a in answers)
    duplicates = sum(a["duplicates"] for a in answers)
    assert not [a for a in answers if a["rejected"]]
    assert accepted == sent
    assert duplicates == sent * (CLIENTS - 1)
    assert usage["meters"]["runs"]["used"] == sent


def test_distinct_usage_from_two_processes_on_one_database_is_all_counted(db: Database) -> None:
    """Each process reads a counter and writes its new value: on SQLite the read must be in the
    write's transaction (holding the database), or a batch another process commits between the
    two is overwritten and lost."""
    env = {"TOLLGATE_DATABASE_URL": db.url}
    headers = {"Authorization": f"Bearer {KEY}"}
    with two_servers_with_acme(env) as servers:

        def send(n: int) -> int:
            with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as http:
                accepted = 0
                for batch in range(ROUNDS * 10):
                    events = [
                        {
                            "id": f"c{n}-b{batch}-e{i}",
                            "customer": "acme",
                            "meter": "runs",
                            "value": 1,
                        }
                        for i in range(5)
                    ]
                    answer = http.post("/v1/usage", json={"events": events})
                    assert answer.status_code == 200, answer.text
                    accepted += answer.json()["accepted"]
                return accepted

        with ThreadPoolExecutor(CLIENTS) as pool:
            accepted = sum(pool.map(send, range(CLIENTS)))
        usage = httpx.get(f"{servers[1]}/v1/customers/acme/usage", headers=headers).json()
    assert accepted == CLIENTS * ROUNDS * 10 * 5
    assert usage["meters"]["runs"]["used"] == accepted
