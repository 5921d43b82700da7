"""Credits end to end: a pack bought on the hosted Checkout page, a refund clawing credits back,
burning into the overdraft and its invoice on the set day, once per range.

Tollgate is served over HTTP and the simulator delivers its signed events to it; each story runs
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from tests.conftest import EXAMPLE_CATALOG
from tests.e2e.conftest import World
from tollgate.clock import FrozenClock
from tollgate.services.credit_ledger import burn_for_usage, ledger_problems
from tollgate.services.credits import invoice_overdrafts


def credits_catalog(tmp_path: Path) -> str:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["credit_packs"] = {
        "starter": {
            "name": "Starter credits",
            "credits": 1000,
            "prices": [{"currency": "usd", "amount": "10.00"}],
        }
    }
    catalog["credit_overdraft_product"] = {
        "name": "Credit overdraft",
        "prices": [{"currency": "usd", "amount": "0.02"}],
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def test_a_pack_bought_on_checkout_is_granted_once_and_a_refund_claws_back(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=credits_catalog(tmp_path))
    world.create_customer("acme")
    session = world.call(
        "POST",
        "/v1/customers/acme/credits/checkout",
        json={
            "pack": "starter",
            "success_url": "https://app.example/credits/done",
            "cancel_url": "https://app.example/credits",
        },
    )
    assert session["session_id"].startswith("cs_test_")
    assert world.pay(session["url"]).status_code == 303
    world.settle()

    body = world.call("GET", "/v1/customers/acme/credits")
    assert body["balance"] == 1000
    [purchase] = body["entries"]
    assert (purchase["kind"], purchase["amount"], purchase["reason"]) == (
        "purchase",
        1000,
        "credit pack starter",
    )
    assert purchase["actor"].startswith("stripe:evt_")

    paid = world.stripe.v1.checkout.sessions.retrieve(session["session_id"])
    assert paid.payment_intent
    world.stripe.v1.refunds.create(params={"payment_intent": paid.payment_intent, "amount": 250})
    world.settle()
    body = world.call("GET", "/v1/customers/acme/credits")
    assert body["balance"] == 750
    assert [(e["kind"], e["amount"]) for e in body["entries"]] == [
        ("clawback", -250),
        ("purchase", 1000),
    ]
    unknown = world.http.post(
        "/v1/customers/acme/credits/checkout",
        json={
            "pack": "mega",
            "success_url": "https://a.example",
            "cancel_url": "https://a.example",
        },
    )
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "pack")
    with world.db.transaction() as db_session:
        assert ledger_problems(db_session.connection()) == []


def test_the_overdraft_is_invoiced_on_the_set_day_once_per_range(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(
        TOLLGATE_CATALOG=credits_catalog(tmp_path),
        TOLLGATE_ONBOARD_CREDITS=100,
        TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE=500,
        TOLLGATE_CREDIT_OVERDRAFT_INVOICE_DAY=5,
    )
    created = world.create_customer("acme")
    used_at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    with world.db.write_connection() as connection:
        assert burn_for_usage(
            connection, customer_id="acme", feature="runs", units=400, credits_per_unit=1,
            usage_key="u1", now=used_at,
        )  # fmt: skip
        assert not burn_for_usage(
            connection, customer_id="acme", feature="runs", units=201, credits_per_unit=1,
            usage_key="u2", now=used_at,
        )  # fmt: skip
    assert world.call("GET", "/v1/customers/acme/credits")["balance"] == -300

    container = world.container
    clock = FrozenClock(datetime(2026, 12, 4, 23, tzinfo=UTC))

    def run() -> list[object]:
        return list(
            invoice_overdrafts(
                db=container.db,
                catalog=container.catalog,
                gateway=container.stripe,
                settings=container.settings,
                clock=clock,
            )
        )

    assert run() == []  # the day before the invoice day
    clock.advance(timedelta(hours=2))
    [invoiced] = run()
    assert (invoiced.credits, invoiced.range) == (300, "2026-11")  # type: ignore[attr-defined]
    assert run() == []  # once per range
    world.settle()
    [invoice] = world.invoices(created["stripe_customer_id"])
    # 300 credits at $0.02, finalized (the customer has no card yet, so it stays open).
    assert (invoice.total, invoice.currency) == (600, "usd")
    assert invoice.status in ("open", "paid")
    body = world.call("GET", "/v1/customers/acme/credits")
    assert body["balance"] == 0
    assert body["entries"][0]["kind"] == "overdraft_invoice"
    with world.db.transaction() as session:
        assert ledger_problems(session.connection()) == []
