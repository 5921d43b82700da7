"""The webhook inbox for years: payloads dropped after a while, ids kept longer for dedupe."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
import stripe
from fastapi.testclient import TestClient

from tests.integration.test_webhooks import SECRET, customer_obj, event_obj, new_id
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.clock import FrozenClock
from tollgate.config import ConfigError, Settings, load_settings
from tollgate.db.models import StripeEvent
from tollgate.db.unit_of_work import Database
from tollgate.services.retention import prune_webhook_inbox

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _post(api: TestClient, event: dict[str, object]) -> dict[str, object]:
    body = orjson.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    answer = api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": header})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _age(db: Database, event_id: str, days: int, status: str | None = None) -> None:
    values: dict[str, object] = {"received_at": NOW - timedelta(days=days)}
    if status:
        values["status"] = status
    with db.transaction() as session:
        session.execute(sa.update(StripeEvent).where(StripeEvent.id == event_id).values(**values))


def test_old_payloads_go_ids_stay_for_dedupe_then_go_and_failed_events_keep_theirs(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        db.url,
        STRIPE_WEBHOOK_SECRETS=SECRET,
        TOLLGATE_WEBHOOK_PAYLOAD_RETENTION_DAYS=30,
        TOLLGATE_WEBHOOK_ID_RETENTION_DAYS=90,
    )
    container = build_container(settings)
    events = {
        name: event_obj("customer.created", customer_obj(new_id("cus"), app_id=name))
        for name in ("fresh", "month_old", "quarter_old", "failed_old")
    }
    try:
        with TestClient(create_app(container)) as api:
            for event in events.values():
                _post(api, event)
            _age(db, events["month_old"]["id"], 40)
            _age(db, events["quarter_old"]["id"], 100)
            _age(db, events["failed_old"]["id"], 100, status="failed")

            pruned = prune_webhook_inbox(db=db, clock=FrozenClock(NOW), settings=settings)
            assert (pruned.payloads_dropped, pruned.rows_deleted) == (2, 1)
            with db.transaction() as session:
                rows = {row.id: row for row in session.scalars(sa.select(StripeEvent))}
            assert events["quarter_old"]["id"] not in rows
            assert rows[events["month_old"]["id"]].payload == ""
            assert rows[events["fresh"]["id"]].payload != ""
            assert rows[events["failed_old"]["id"]].payload != ""  # still to be retried
            # A late repeat of an event whose payload went is still recognised: applied once.
            assert _post(api, events["month_old"])["status"] == "duplicate"
            again = prune_webhook_inbox(db=db, clock=FrozenClock(NOW), settings=settings)
            assert (again.payloads_dropped, again.rows_deleted) == (0, 0)
    finally:
        container.close()


def test_ids_may_not_be_dropped_within_stripes_retry_window_or_before_payloads() -> None:
    with pytest.raises(ConfigError, match="TOLLGATE_WEBHOOK_ID_RETENTION_DAYS"):
        load_settings(TOLLGATE_ENV="test", TOLLGATE_WEBHOOK_ID_RETENTION_DAYS=3)
    with pytest.raises(ConfigError, match="ids outlive payloads"):
        load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_WEBHOOK_PAYLOAD_RETENTION_DAYS=60,
            TOLLGATE_WEBHOOK_ID_RETENTION_DAYS=30,
        )
