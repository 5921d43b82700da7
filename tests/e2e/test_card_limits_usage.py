"""Usage that takes a renewal past the plan's card limit moves that invoice off cards: the
worker's `follow_usage_past_card_limits` offers the subscription's invoices the methods that may
pay a period and the overage so far, Stripe's renewal invoice carries them (the card is not
charged), and the next period offers cards again. A customer within the limit, one paying by
bank transfer and a plan without a card limit are left alone. On SQLite and PostgreSQL,
against the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.conftest import EXAMPLE_CATALOG
from tests.e2e.conftest import DAY, World
from tests.e2e.test_metering import pro_customer, record, runs
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.db.tables import NOTIFICATIONS
from tollgate.jobs.card_limits import follow_usage_past_card_limits
from tollgate.services.card_limits import UsageMethodsReport
from tollgate.services.meter_usage import sync_meter_usage
from tollgate.services.outbox import preview_email

T0 = 1_790_000_000  # 2026-09-21T14:13:20Z
HOUR = 3600


def limited_catalog(tmp_path: Path) -> str:
    """The example catalog, Pro ($29 a month, runs over 100,000 at $0.50 a 1,000) taking cards
    up to $50 an invoice, else a bank debit."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["plans"]["pro"]["payment_methods"] = {
        "accept": ["card", "us_bank_account"],
        "card_limit": {"usd": 5000},
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


@pytest.fixture
def shop(make_world: Callable[..., World], tmp_path: Path) -> World:
    return make_world(TOLLGATE_CATALOG=limited_catalog(tmp_path))


@contextmanager
def at(world: World, moment: int) -> Iterator[Container]:
    """Tollgate's jobs as the worker runs them, with the clock at `moment` (the test clock's
    time; the served Tollgate keeps real time for webhooks)."""
    worker = build_container(
        world.container.settings, clock=FrozenClock(datetime.fromtimestamp(moment, UTC))
    )
    try:
        yield worker
    finally:
        worker.close()


def follow(world: World, moment: int) -> UsageMethodsReport:
    with at(world, moment) as worker:
        report = follow_usage_past_card_limits(worker)
    world.settle()
    return report


def offered(world: World, subscription_id: str) -> Any:
    return world.stripe.v1.subscriptions.retrieve(
        subscription_id
    ).payment_settings.payment_method_types


def test_usage_past_the_card_limit_keeps_the_renewal_off_the_card_until_the_next_period(
    shop: World,
) -> None:
    clock = shop.test_clock(T0)
    heavy = pro_customer(shop, "heavy-org", clock)
    light = pro_customer(shop, "light-org", clock)
    heavy_sub, light_sub = (
        shop.subscription(org)["stripe_subscription_id"] for org in ("heavy-org", "light-org")
    )
    # Pro takes cards and bank debits (no transfers), and a card may pay a period's $29.
    assert offered(shop, heavy_sub) == ["card", "us_bank_account"]

    # Within the limit: $29 and 10 blocks of overage ($5) is $34. Nothing is sent to Stripe.
    assert record(shop, runs("heavy-org", 0, 100, 1_100, T0 + 60))["accepted"] == 100
    assert record(shop, runs("light-org", 0, 10, 1_000, T0 + 60))["accepted"] == 10
    quiet = follow(shop, T0 + HOUR)
    assert (quiet.checked, quiet.narrowed, quiet.widened) == (2, [], [])

    # Past it: 150,000 runs are 50 blocks ($25), so the renewal would be $54 on a $50 card.
    assert record(shop, runs("heavy-org", 100, 40, 1_000, T0 + 2 * HOUR))["accepted"] == 40
    moved = follow(shop, T0 + 3 * HOUR)
    assert (moved.narrowed, moved.widened, moved.failed) == ([heavy_sub], [], [])
    assert offered(shop, heavy_sub) == ["us_bank_account"]
    assert offered(shop, light_sub) == ["card", "us_bank_account"]
    mirrored = shop.call("GET", "/v1/customers/heavy-org/subscription")
    assert mirrored["status"] == "active"
    again = follow(shop, T0 + 4 * HOUR)  # the mirror has it now: nothing to send
    assert (again.checked, again.narrowed, again.widened) == (2, [], [])
    # The customer is told once: the invoice to come, the limit, how it will be collected.
    told = preview_email(shop.container, template="card_limit_passed", customer_id="heavy-org")
    assert not told.sample and told.recipient == "billing@heavy-org.example"
    assert "about $54.00" in told.text and "at most $50.00" in told.text
    assert "a US bank account (ACH debit)" in told.text and "21 October 2026" in told.text
    assert queued(shop, "card_limit_passed") == ["heavy-org"]
    # Another change offers cards again (here straight in Stripe, as a plan change would):
    # the next run takes them off again, and the customer is not told twice.
    shop.stripe.v1.subscriptions.update(
        heavy_sub,
        params={"payment_settings": {"payment_method_types": ["card", "us_bank_account"]}},
    )
    shop.settle()
    redone = follow(shop, T0 + 4 * HOUR + 60)
    assert (redone.narrowed, redone.widened) == ([heavy_sub], [])
    assert offered(shop, heavy_sub) == ["us_bank_account"]
    assert queued(shop, "card_limit_passed") == ["heavy-org"]

    # The renewal invoices the overage, offered to the bank only: the card is not charged.
    shop.advance(clock, T0 + 5 * HOUR)  # Stripe takes no meter event from its future
    later = FrozenClock(shop.container.clock.now() + timedelta(hours=1))  # the groups are due
    sent = sync_meter_usage(db=shop.db, gateway=shop.container.stripe, clock=later)
    assert (sent.sent, sent.units) == (1, 50_000), sent
    shop.advance(clock, T0 + 30 * DAY + 2 * HOUR)
    renewal = shop.invoices(heavy["stripe_customer_id"])[-1]
    assert renewal.billing_reason == "subscription_cycle"
    assert renewal.total == 2900 + 2500 > 5000
    assert renewal.payment_settings.payment_method_types == ["us_bank_account"]
    assert renewal.status == "open" and renewal.amount_paid == 0
    paid = shop.invoices(light["stripe_customer_id"])[-1]
    assert (paid.total, paid.status) == (2900 + 0, "paid")  # 100,000 runs: all included

    # A new period has no usage yet: cards may pay it again.
    back = follow(shop, T0 + 30 * DAY + 3 * HOUR)
    assert (back.narrowed, back.widened) == ([], [heavy_sub])
    assert queued(shop, "card_limit_passed") == ["heavy-org"]  # giving cards back says nothing
    assert offered(shop, heavy_sub) == ["card", "us_bank_account"]


def queued(world: World, template: str) -> list[str]:
    with world.db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(NOTIFICATIONS.c.customer_id).where(NOTIFICATIONS.c.template == template)
        ).all()
    return [row[0] for row in rows]


def test_a_plan_with_no_card_limit_is_never_looked_at(make_world: Callable[..., World]) -> None:
    world = make_world()  # the example catalog: no card limit
    clock = world.test_clock(T0)
    pro_customer(world, "big-org", clock)
    assert record(world, runs("big-org", 0, 100, 10_000, T0 + 60))["accepted"] == 100
    report = follow(world, T0 + HOUR)
    assert (report.checked, report.narrowed, report.widened) == (0, [], [])


def test_a_subscription_paid_by_bank_transfer_is_left_alone(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    """Sent invoices (a transfer) are paid however the customer pays them: no card to keep off."""
    catalog = yaml.safe_load(Path(limited_catalog(tmp_path)).read_text())
    catalog["plans"]["pro"]["payment_methods"]["accept"] = ["card", "customer_balance"]
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(catalog))
    world = make_world(TOLLGATE_CATALOG=str(path))
    clock = world.test_clock(T0)
    world.create_customer("wire-org", test_clock=clock)
    answer = world.put_subscription(
        "wire-org", plan="pro", interval="month", trial_days=0, payment_method="customer_balance"
    )
    assert answer["collection_method"] == "send_invoice"
    world.settle()  # the subscription's events: Pro's usage terms, not Free's hard limit
    recorded = record(world, runs("wire-org", 0, 100, 10_000, T0 + 60))
    assert recorded["accepted"] == 100, recorded["rejected"][:1]
    report = follow(world, T0 + HOUR)
    assert (report.checked, report.narrowed, report.widened) == (0, [], [])
    sub = world.subscription("wire-org")["stripe_subscription_id"]
    assert offered(world, sub) == ["customer_balance"]
