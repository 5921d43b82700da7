"""Issue 18: every refused write leaves the database and Stripe (the simulator) as they were.

Each write below is refused (bad input, unknown names, a conflict, the wrong key, a bad
signature, an oversized body, or a Stripe refusal after Tollgate wrote its own row). Every table
of the database and every object of every simulated Stripe account is snapshotted before and
after each one; they must be identical. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from stripesim.testing import RunningSim
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

WEBHOOK_SECRET = "whsec_tollgate_refused_0123456789"
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
# Columns a refused request may still move: when a key was last used.
MOVING = {("api_keys", "last_used_at")}

W, R, NONE = "write", "read", "none"
REFUSED: list[tuple[str, str, str, Any]] = [
    (W, "POST", "/v1/customers", {"id": "c2"}),
    (W, "POST", "/v1/customers", {"id": "-bad", "email": "b@x.example"}),
    (W, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example", "plan": "pro"}),
    (W, "POST", "/v1/customers", {"id": "acme", "email": "other@acme.example"}),
    (W, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example", "currency": "xxx"}),
    (W, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example", "metadata": {"k\ud800": 1}}),
    (W, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example", "stripe_account": "acct_no"}),
    (W, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example", "test_clock": "clock_no"}),
    (R, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example"}),
    (NONE, "POST", "/v1/customers", {"id": "c2", "email": "b@x.example"}),
    (W, "PATCH", "/v1/customers/nobody", {"name": "N"}),
    (W, "PATCH", "/v1/customers/acme", {"email": "not an email"}),
    (W, "PATCH", "/v1/customers/acme", {"name": "A\x00B"}),
    (R, "PATCH", "/v1/customers/acme", {"name": "N"}),
    (W, "POST", "/v1/customers/acme/checkout", {"plan": "nope", "interval": "month", **URLS}),
    (W, "POST", "/v1/customers/acme/checkout", {"plan": "pro", "interval": "month",
                                                "success_url": "nope", "cancel_url": "nope"}),
    (W, "POST", "/v1/customers/acme/portal", {"return_url": "javascript:alert(1)"}),
    (W, "PUT", "/v1/customers/acme/subscription", {"plan": "nope", "interval": "month"}),
    (W, "PUT", "/v1/customers/acme/subscription", {"plan": "team", "interval": "month",
                                                   "seats": -1}),
    (W, "PUT", "/v1/customers/nobody/subscription", {"plan": "pro", "interval": "month"}),
    (W, "DELETE", "/v1/customers/nobody/subscription", None),
    (W, "POST", "/v1/customers/acme/credits", {"amount": 0, "reason": "r", "idempotency_key": "k"}),
    (W, "POST", "/v1/customers/acme/credits", {"amount": 5, "reason": "r\x00",
                                               "idempotency_key": "k"}),
    (W, "POST", "/v1/customers/nobody/credits", {"amount": 5, "reason": "r",
                                                 "idempotency_key": "k"}),
    (W, "PUT", "/v1/customers/acme/credits/allowance", {"allowance": -1}),
    (W, "POST", "/v1/customers/acme/credits/checkout", {"pack": "nope", **URLS}),
    (W, "POST", "/v1/usage", {"events": "many"}),
    (W, "POST", "/v1/usage", {"events": []}),
    (R, "POST", "/v1/usage", {"events": [{"id": "u", "customer": "acme", "meter": "runs",
                                          "value": 1}]}),
    (W, "POST", "/v1/api-keys", {"name": "k", "scope": "admin"}),
    (R, "POST", "/v1/api-keys", {"name": "k", "scope": "read"}),
    (NONE, "POST", "/webhooks/stripe", {"id": "evt_1", "object": "event"}),
    (W, "POST", "/v1/customers", "x" * 2_000_000),
]  # fmt: skip


@pytest.fixture
def app(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Container]:
    built = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=WEBHOOK_SECRET))
    yield built
    built.close()


def database_snapshot(db: Database, metadata: sa.MetaData) -> dict[str, list[tuple[Any, ...]]]:
    taken: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as connection:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in MOVING]
            rows = connection.execute(sa.select(*columns)).all()
            taken[table.name] = sorted((tuple(map(repr, row)) for row in rows), key=repr)
    return taken


def stripe_snapshot(sim: RunningSim) -> dict[str, bytes]:
    sim.webhooks.flush(timeout=5)
    with sim.sim.lock:
        return {
            account_id: orjson.dumps(account.objects, default=repr)
            for account_id, account in sim.sim.accounts.items()
        }


def test_every_refused_write_changes_nothing_in_the_database_or_in_stripe(
    app: Container, sim: RunningSim
) -> None:
    keys = {
        W: create_api_key(db=app.db, clock=app.clock, name="w", scope="write").secret,
        R: create_api_key(db=app.db, clock=app.clock, name="r", scope="read").secret,
    }
    with TestClient(create_app(app)) as api:
        write = {"Authorization": f"Bearer {keys[W]}"}
        made = api.post(
            "/v1/customers", json={"id": "acme", "email": "b@acme.example"}, headers=write
        )
        assert made.status_code == 201, made.text
        changed: list[str] = []
        metadata = sa.MetaData()
        metadata.reflect(app.db.engine)
        for key, method, path, body in REFUSED:
            headers = {"Content-Type": "application/json"}
            if key != NONE:
                headers["Authorization"] = f"Bearer {keys[key]}"
            content = None if body is None else json.dumps(body).encode()
            before = (database_snapshot(app.db, metadata), stripe_snapshot(sim))
            answer = api.request(method, path, content=content, headers=headers)
            label = f"{method} {path} {str(body)[:60]} ({key} key)"
            assert 400 <= answer.status_code < 500, f"{label}: {answer.status_code} {answer.text}"
            error = answer.json()["error"]
            assert isinstance(error["type"], str) and error["message"], label
            if (database_snapshot(app.db, metadata), stripe_snapshot(sim)) != before:
                changed.append(label)
        assert not changed, "refused writes that changed something:\n" + "\n".join(changed)
