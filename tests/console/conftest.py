"""A console desk: Tollgate's API on SQLite or PostgreSQL with webhook secrets, a frozen clock
near the hand-built events' time, API keys, and ways to deliver Stripe events."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from tests.integration.test_webhooks import (
    MONTH,
    T0,
    charge_obj,
    customer_obj,
    event_obj,
    subscription_obj,
)
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key

SECRET = "whsec_tollgate_console_0123456789"
NOW = datetime.fromtimestamp(T0, UTC) + timedelta(days=10)

__all__ = ["MONTH", "NOW", "T0", "Desk", "charge_obj", "customer_obj", "event_obj"]


@dataclass
class Desk:
    container: Container
    api: TestClient
    read_key: str
    write_key: str
    clock: FrozenClock

    @property
    def db(self) -> Database:
        return self.container.db

    def get(self, path: str, **params: Any) -> Any:
        answer = self.api.get(
            path, params=params, headers={"Authorization": f"Bearer {self.read_key}"}
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.write_key}"}
        return self.api.request(method, path, headers=headers, **kwargs)

    def post_event(self, event: dict[str, Any]) -> Any:
        payload = orjson.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload.decode(), SECRET, int(self.clock.now().timestamp())
        )
        return self.api.post(
            "/webhooks/stripe",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
        )

    def deliver(self, event: dict[str, Any]) -> None:
        answer = self.post_event(event)
        assert answer.status_code == 200, answer.text

    def customer(self, app_id: str, *, email: str | None = None) -> str:
        """Make a customer through Stripe's customer.created event; return its `cus_` id."""
        cus_id = f"cus_{secrets.token_hex(7)}"
        self.deliver(
            event_obj(
                "customer.created",
                customer_obj(cus_id, app_id=app_id, email=email or f"billing@{app_id}.example"),
            )
        )
        return cus_id

    def subscribe(
        self, cus_id: str, *, status: str = "active", plan: str = "pro", **kw: Any
    ) -> str:
        sub_id = f"sub_{secrets.token_hex(7)}"
        event = event_obj(
            "customer.subscription.created",
            subscription_obj(sub_id, cus_id, status=status, plan=plan, **kw),
        )
        self.deliver(event)
        return sub_id

    def charge(
        self,
        cus_id: str,
        amount: int,
        method: str = "card",
        status: str = "succeeded",
        created: datetime | None = None,
    ) -> str:
        ch_id = f"ch_{secrets.token_hex(7)}"
        obj = charge_obj(ch_id, cus_id, amount=amount, status=status)
        if created is not None:
            obj["created"] = int(created.timestamp())
        obj["payment_method_details"] = {"type": method}
        self.deliver(event_obj(f"charge.{status}", obj))
        return ch_id

    def rename(self, old: str, new: str) -> None:
        with self.db.engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


@pytest.fixture
def desk(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Desk]:
    clock = FrozenClock(NOW)
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET), clock=clock)
    read = create_api_key(db=container.db, clock=clock, name="console-read", scope="read")
    write = create_api_key(db=container.db, clock=clock, name="console-write", scope="write")
    with TestClient(create_app(container)) as api:
        yield Desk(container, api, read.secret, write.secret, clock)
    container.close()
