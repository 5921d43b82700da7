"""Issue 18, findings 5 and 6: a signed event is trusted for what Stripe would send, no more.

A connected account is a tenant: whatever metadata it writes on its customers, it cannot claim
an app's customer id. And Stripe never moves a subscription to another customer: an event that
does is refused (nothing applied), recorded in the audit log, logged and counted for alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.integration.test_webhooks import (  # the webhook tests' world
    SECRET,
    Hooks,
    customer_obj,
    event_obj,
    known_customer,
    new_id,
    subscription_obj,
)
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import Settings
from tollgate.db.models import AuditLog, Customer, Subscription
from tollgate.db.unit_of_work import Database
from tollgate.metrics import WEBHOOK_REFUSED
from tollgate.services.api_keys import create_api_key

TENANT = "acct_1TenantXyz"


@pytest.fixture
def hooks(db: Database, make_settings: Callable[..., Settings]) -> Iterator[Hooks]:
    container = build_container(make_settings(db.url, STRIPE_WEBHOOK_SECRETS=SECRET))
    with TestClient(create_app(container)) as api:
        yield Hooks(api, container)
    container.close()


def test_a_connected_accounts_metadata_cannot_claim_an_app_customer_id(hooks: Hooks) -> None:
    cus_id = new_id("cus")
    claim = customer_obj(cus_id, app_id="victim")
    hooks.deliver(event_obj("customer.created", claim, account=TENANT))
    assert hooks.get(Customer, "victim") is None
    mirrored = hooks.customer(cus_id)
    assert (mirrored.id, mirrored.stripe_account) == (cus_id, TENANT)
    # The app then creates its own customer under that id.
    secret = create_api_key(
        db=hooks.db, clock=hooks.container.clock, name="app", scope="write"
    ).secret
    made = hooks.api.post(
        "/v1/customers",
        json={"id": "victim", "email": "b@victim.example", "offline": True},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert made.status_code == 201, made.text


def test_the_platforms_own_stamp_is_still_trusted(hooks: Hooks) -> None:
    cus_id = known_customer(hooks, app_id="acme")
    assert hooks.customer(cus_id).id == "acme"


def test_an_event_moving_a_subscription_to_another_customer_is_refused_and_recorded(
    hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    pro_customer = known_customer(hooks, app_id="acme")
    free_customer = known_customer(hooks, app_id="globex")
    sub_id = new_id("sub")
    hooks.deliver(
        event_obj("customer.subscription.created", subscription_obj(sub_id, pro_customer))
    )
    refused_before = WEBHOOK_REFUSED.labels("subscription_customer_changed")._value.get()
    moved = subscription_obj(sub_id, free_customer, plan="team")
    caplog.set_level(logging.ERROR)
    answer = hooks.deliver(event_obj("customer.subscription.updated", moved, created=10**10))
    assert answer["status"] == "succeeded"  # stored and answered: Stripe must not retry it
    row = hooks.get(Subscription, sub_id)
    assert (row.customer_id, row.plan) == ("acme", "pro")
    assert WEBHOOK_REFUSED.labels("subscription_customer_changed")._value.get() == (
        refused_before + 1
    )
    with hooks.db.transaction() as session:
        actions = session.scalars(
            sa.select(AuditLog.action).where(AuditLog.object_id == sub_id).order_by(AuditLog.id)
        ).all()
    assert actions == ["created", "refused"]
    assert any(sub_id in record.getMessage() for record in caplog.records)
