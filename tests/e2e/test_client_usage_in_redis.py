"""With TOLLGATE_REDIS_URL set, usage recorded in process goes through Redis as HTTP usage does.

The in-process client once recorded usage in the database alone: Redis never counted it, so
HTTP batches after it saw a lower count and let a customer past a hard limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import serve
from tests.redis_space import redis_space
from tollgate.bootstrap import Container, build_container
from tollgate.client import LocalTollgate, Tollgate
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

pytestmark = pytest.mark.redis

OVER_THE_LIMIT = "Free plan: 1,000 runs a month, 1,000 used; upgrade to Pro for more."


@pytest.fixture
def clients(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Container, Tollgate, LocalTollgate]]:
    with redis_space() as counters:
        container = build_container(make_settings(db.url, STRIPE_SECRET_KEY="", **counters))
        key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
        with (
            serve(container) as base_url,
            Tollgate(base_url, key.secret) as remote,
            LocalTollgate(container) as local,
        ):
            yield container, remote, local
        container.close()


def runs(customer: str, ids: range) -> list[dict[str, Any]]:
    return [
        {"id": f"{customer}-{i}", "customer": customer, "meter": "runs", "value": 1} for i in ids
    ]


def in_redis(app: Container, customer: str) -> int | None:
    """The customer's runs this period as Redis counts them (None: no counter there)."""
    counters = app.usage_counters
    assert counters is not None
    keys = [key for key in counters.scan() if key.endswith(f":runs:{customer}")]
    if not keys:
        return None
    value = counters.client.hget(keys[0], "v")
    return None if value is None else int(value)


def test_usage_in_process_is_counted_and_limited_in_redis_as_over_http(
    clients: tuple[Container, Tollgate, LocalTollgate],
) -> None:
    app, remote, local = clients
    for customer in ("over-http", "in-process"):
        local.create_customer(customer, email=f"b@{customer}.example", offline=True)

    # The same batches, one customer over HTTP and one in process: the same answers...
    for client, customer in ((remote, "over-http"), (local, "in-process")):
        assert client.record_usage(runs(customer, range(995)))["accepted"] == 995
    reports = [
        client.record_usage(runs(customer, range(995, 1003)))
        for client, customer in ((remote, "over-http"), (local, "in-process"))
    ]
    for report in reports:
        assert (report["accepted"], report["duplicates"]) == (5, 0)
        assert [rejected["error"]["code"] for rejected in report["rejected"]] == [
            "limit_exceeded"
        ] * 3
        assert report["rejected"][0]["error"]["message"] == OVER_THE_LIMIT
    # ...and the same counts, in Redis.
    assert in_redis(app, "over-http") == in_redis(app, "in-process") == 1000

    # What one side recorded holds the limit for the other.
    local.create_customer("shared", email="b@shared.example", offline=True)
    assert local.record_usage(runs("shared", range(999)))["accepted"] == 999
    assert in_redis(app, "shared") == 999
    over_http = remote.record_usage(runs("shared", range(999, 1001)))
    assert (over_http["accepted"], len(over_http["rejected"])) == (1, 1)
    refused = local.record_usage(runs("shared", range(1001, 1002)))
    assert [rejected["error"]["message"] for rejected in refused["rejected"]] == [OVER_THE_LIMIT]
    assert in_redis(app, "shared") == 1000
    assert remote.get_usage("shared")["meters"]["runs"]["used"] == 1000
