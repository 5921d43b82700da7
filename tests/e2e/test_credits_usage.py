"""Credits burned by usage, end to end over HTTP against stripesim: onboarding credits burned to
exactly zero (soonest-expiring grant first), the denial and the rejected event with their
reasons, the overdraft down to its allowance and no further, and access restored at once by a
support grant and by a pack bought on the hosted Checkout page.

Each story runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import stripe
import yaml

from tests.e2e.conftest import World
from tests.e2e.test_credits_purchase import credits_catalog
from tollgate.bootstrap import build_container
from tollgate.jobs.credits import invoice_credit_overdraft
from tollgate.services.credit_ledger import ledger_problems

HOUR = 3600

PER_CALL = 5  # credits one AI call burns
DENIED_AT_ZERO = "AI calls: 5 credits a call; 5 needed, balance 0; buy credits to continue."


def usage_catalog(tmp_path: Path) -> str:
    """The example catalog with a pack, the overdraft product and AI calls priced in credits."""
    path = Path(credits_catalog(tmp_path))
    catalog = yaml.safe_load(path.read_text())
    catalog["features"]["ai_calls"] = {
        "type": "metered",
        "name": "AI calls",
        "unit": "call",
        "aggregation": "sum",
        "credits_per_unit": PER_CALL,
    }
    catalog["plans"]["free"]["features"]["ai_calls"] = {"included": "unlimited"}
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def calls(customer: str, prefix: str, values: list[int]) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}-{i}", "customer": customer, "meter": "ai_calls", "value": value}
        for i, value in enumerate(values)
    ]


def record(world: World, events: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(world.call("POST", "/v1/usage", json={"events": events}))


def check(world: World, customer: str, quantity: int = 1) -> dict[str, Any]:
    return dict(
        world.call(
            "GET", f"/v1/customers/{customer}/entitlements/ai_calls", params={"quantity": quantity}
        )
    )


def credits(world: World, customer: str) -> dict[str, Any]:
    return dict(world.call("GET", f"/v1/customers/{customer}/credits"))


def lots(body: dict[str, Any]) -> dict[str, int]:
    """Return what is left of each grant or purchase, by reason."""
    return {e["reason"]: e["remaining"] for e in body["entries"] if e["remaining"] is not None}


def assert_books_balance(world: World) -> None:
    with world.db.transaction() as session:
        assert ledger_problems(session.connection()) == []


def test_usage_burns_credits_to_zero_then_is_denied_until_a_grant_or_a_pack(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=usage_catalog(tmp_path), TOLLGATE_ONBOARD_CREDITS=100)
    world.create_customer("acme")
    body = credits(world, "acme")
    assert (body["balance"], body["allowance"]) == (100, 0)
    assert [(e["kind"], e["amount"], e["reason"]) for e in body["entries"]] == [
        ("grant", 100, "onboarding")
    ]

    # A promotional grant that expires is burned before the onboarding grant that does not.
    expires_at = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    promo = world.call(
        "POST",
        "/v1/customers/acme/credits",
        201,
        json={
            "amount": 50,
            "reason": "launch promotion",
            "idempotency_key": "promo-2026",
            "expires_at": expires_at.isoformat(),
        },
    )
    assert (promo["kind"], promo["amount"], promo["remaining"]) == ("grant", 50, 50)
    assert promo["actor"] == "api:app"
    assert check(world, "acme", 30)["allowed"] is True  # 150 credits: 30 calls cost exactly that

    assert record(world, calls("acme", "a", [2, 4])) == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [],
    }
    body = credits(world, "acme")
    assert body["balance"] == 120
    assert lots(body) == {"launch promotion": 20, "onboarding": 100}
    assert [(e["kind"], e["amount"]) for e in body["entries"][:2]] == [("burn", -20), ("burn", -10)]

    assert record(world, calls("acme", "b", [4, 10, 10])) == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": [],
    }
    body = credits(world, "acme")
    assert body["balance"] == 0
    assert lots(body) == {"launch promotion": 0, "onboarding": 0}
    usage = world.call("GET", "/v1/customers/acme/usage")["meters"]["ai_calls"]
    assert usage["used"] == 30

    denied = check(world, "acme")
    assert (denied["allowed"], denied["code"], denied["reason"]) == (
        False,
        "insufficient_credits",
        DENIED_AT_ZERO,
    )
    assert check(world, "acme", 0)["allowed"] is True  # nothing costs nothing

    rejected = record(world, calls("acme", "c", [1]))
    assert (rejected["accepted"], rejected["duplicates"]) == (0, 0)
    [refused] = rejected["rejected"]
    assert (refused["index"], refused["id"], refused["error"]["code"]) == (
        0,
        "c-0",
        "insufficient_credits",
    )
    assert "AI calls costs 5 credits a unit" in refused["error"]["message"]
    assert "used up" in refused["error"]["message"]
    # A repeat of an event already counted is still a duplicate, not a refusal.
    repeat = record(world, calls("acme", "b", [4]))
    assert repeat == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert credits(world, "acme")["balance"] == 0
    assert world.call("GET", "/v1/customers/acme/usage")["meters"]["ai_calls"]["used"] == 30

    # A support grant: the very next check allows again (the change drops the cached decision).
    granted = world.call(
        "POST",
        "/v1/customers/acme/credits",
        201,
        json={"amount": 10, "reason": "support ticket 4711", "idempotency_key": "t-4711"},
    )
    assert (granted["amount"], granted["expires_at"]) == (10, None)
    allowed = check(world, "acme", 2)
    assert (allowed["allowed"], allowed["code"]) == (True, "allowed")
    assert check(world, "acme", 3)["allowed"] is False  # 15 credits, 10 held
    assert record(world, calls("acme", "e", [2]))["accepted"] == 1
    assert credits(world, "acme")["balance"] == 0
    assert check(world, "acme")["allowed"] is False

    # A pack bought on the hosted Checkout page restores access too, once its payment lands.
    session = world.call(
        "POST",
        "/v1/customers/acme/credits/checkout",
        json={
            "pack": "starter",
            "success_url": "https://app.example/credits/done",
            "cancel_url": "https://app.example/credits",
        },
    )
    assert check(world, "acme")["allowed"] is False  # not paid yet
    assert world.pay(session["url"]).status_code == 303
    world.settle()
    assert check(world, "acme", 200)["allowed"] is True  # 1,000 credits: 200 calls
    assert check(world, "acme", 201)["allowed"] is False
    assert record(world, calls("acme", "d", [150]))["accepted"] == 1
    body = credits(world, "acme")
    assert body["balance"] == 250
    assert lots(body) == {
        "credit pack starter": 250,
        "support ticket 4711": 0,
        "launch promotion": 0,
        "onboarding": 0,
    }
    assert_books_balance(world)


def test_the_overdraft_lets_usage_go_below_zero_down_to_the_allowance_and_no_further(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(
        TOLLGATE_CATALOG=usage_catalog(tmp_path),
        TOLLGATE_ONBOARD_CREDITS=20,
        TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE=50,
    )
    world.create_customer("acme")
    assert (credits(world, "acme")["balance"], credits(world, "acme")["allowance"]) == (20, 50)

    # 4 calls spend the 20 credits; 10 more take the balance to -50. An event that would go
    # past the allowance is refused on its own; the events after it that still fit count.
    assert record(world, calls("acme", "a", [4]))["accepted"] == 1
    assert check(world, "acme", 10)["allowed"] is True  # at zero, within the allowance
    report = record(world, calls("acme", "b", [3, 8, 1, 6]))
    assert (report["accepted"], report["duplicates"]) == (3, 0)
    [refused] = report["rejected"]
    assert (refused["index"], refused["id"], refused["error"]["code"]) == (
        1,
        "b-1",
        "insufficient_credits",
    )
    assert "overdraft allowance" in refused["error"]["message"]
    assert credits(world, "acme")["balance"] == -50  # 3 + 1 + 6 calls: 50 credits
    # Exactly at the allowance: nothing more, even the smallest call.
    denied = check(world, "acme")
    assert (denied["allowed"], denied["code"], denied["reason"]) == (
        False,
        "insufficient_credits",
        "AI calls: 5 credits a call; 5 needed, balance -50 (overdraft allowed to -50); "
        "buy credits to continue.",
    )
    report = record(world, calls("acme", "c", [1, 1]))
    assert report["accepted"] == 0
    assert [r["error"]["code"] for r in report["rejected"]] == ["insufficient_credits"] * 2
    body = credits(world, "acme")
    assert body["balance"] == -50
    assert [e["kind"] for e in body["entries"]] == ["burn"] * 4 + ["grant"]
    assert world.call("GET", "/v1/customers/acme/usage")["meters"]["ai_calls"]["used"] == 14

    # A grant repays the debt first: 60 credits leave 10 to spend, and 12 calls fit again.
    world.call(
        "POST",
        "/v1/customers/acme/credits",
        201,
        json={"amount": 60, "reason": "goodwill", "idempotency_key": "goodwill-1"},
    )
    body = credits(world, "acme")
    assert (body["balance"], lots(body)["goodwill"]) == (10, 10)
    assert check(world, "acme", 12)["allowed"] is True
    assert check(world, "acme", 13)["allowed"] is False
    assert_books_balance(world)


def test_concurrent_clients_never_burn_past_the_allowance(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(
        TOLLGATE_CATALOG=usage_catalog(tmp_path),
        TOLLGATE_ONBOARD_CREDITS=100,
        TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE=50,
    )
    world.create_customer("acme")

    def client(n: int) -> list[str]:
        codes: list[str] = []
        with httpx.Client(base_url=world.base_url, headers=dict(world.http.headers)) as http:
            for batch in range(3):
                events = calls("acme", f"c{n}-b{batch}", [1] * 5)
                answer = http.post("/v1/usage", json={"events": events}, timeout=60)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                codes += ["accepted"] * body["accepted"]
                codes += [r["error"]["code"] for r in body["rejected"]]
        return codes

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = [code for result in pool.map(client, range(8)) for code in result]
    # 150 credits of balance and allowance at 5 a call: exactly 30 of the 120 calls fit.
    assert (codes.count("accepted"), codes.count("insufficient_credits")) == (30, 90)
    body = credits(world, "acme")
    assert body["balance"] == -50
    assert sum(-e["amount"] for e in body["entries"] if e["kind"] == "burn") == 150
    assert world.call("GET", "/v1/customers/acme/usage")["meters"]["ai_calls"]["used"] == 30
    assert check(world, "acme")["allowed"] is False
    assert_books_balance(world)


class StripeClockTime:
    """Tollgate's clock read off a Stripe test clock: a job sees the time the clock was moved to."""

    def __init__(self, client: stripe.StripeClient, clock_id: str) -> None:
        self.client = client
        self.clock_id = clock_id

    def now(self) -> datetime:
        frozen = self.client.v1.test_helpers.test_clocks.retrieve(self.clock_id).frozen_time
        return datetime.fromtimestamp(frozen, UTC)


def test_the_overdraft_is_invoiced_on_the_set_day_as_the_test_clock_reaches_it(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(
        TOLLGATE_CATALOG=usage_catalog(tmp_path),
        TOLLGATE_ONBOARD_CREDITS=20,
        TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE=50,
        TOLLGATE_CREDIT_OVERDRAFT_INVOICE_DAY=5,
    )
    # Tollgate records usage in real time, so the customer's test clock starts there too.
    start = int(time.time())
    clock_id = world.test_clock(start)
    stripe_id = world.create_customer("acme", test_clock=clock_id)["stripe_customer_id"]
    declining = world.stripe.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": stripe_id}
    )
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": declining.id}}
    )
    assert record(world, calls("acme", "a", [4, 6, 4]))["accepted"] == 3  # 70 credits: 20 + 50
    assert credits(world, "acme")["balance"] == -50
    assert check(world, "acme")["allowed"] is False

    # The job, scheduled as in the worker, but reading the time off the customer's test clock.
    job_clock = StripeClockTime(world.stripe, clock_id)
    job_app = build_container(world.container.settings, clock=job_clock)
    try:
        used = datetime.fromtimestamp(start, UTC)
        month = used.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        invoice_day = (month + timedelta(days=32)).replace(day=5)  # the 5th of next month
        if used.day < 5:  # this month's 5th is still ahead: it invoices last month, not this
            world.advance(clock_id, int(month.replace(day=5).timestamp()) + HOUR)
            assert invoice_credit_overdraft(job_app) == []
        world.advance(clock_id, int(invoice_day.timestamp()) - HOUR)
        assert invoice_credit_overdraft(job_app) == []  # the day before
        assert world.invoices(stripe_id) == []

        world.advance(clock_id, int(invoice_day.timestamp()) + HOUR)
        [invoiced] = invoice_credit_overdraft(job_app)
        assert (invoiced.customer_id, invoiced.credits, invoiced.range) == (
            "acme",
            50,
            f"{month.year:04d}-{month.month:02d}",
        )
        assert invoice_credit_overdraft(job_app) == []  # once per range
        world.settle()
        [invoice] = world.invoices(stripe_id)
        assert invoice.id == invoiced.invoice_id
        # 50 credits at $0.02, made on the customer's clock on the 5th; the card declined it.
        assert (invoice.total, invoice.currency, invoice.created) == (
            100,
            "usd",
            int(invoice_day.timestamp()) + HOUR,
        )
        assert (invoice.status, invoice.attempt_count) == ("open", 1)
        retry_at = invoice.next_payment_attempt
        assert retry_at is not None and retry_at > invoice.created

        # The invoiced credits pay the debt back: access returns with the full allowance.
        body = credits(world, "acme")
        assert body["balance"] == 0
        assert (body["entries"][0]["kind"], body["entries"][0]["amount"]) == (
            "overdraft_invoice",
            50,
        )
        assert body["entries"][0]["reason"] == (
            f"overdraft of {invoiced.range} invoiced ({invoice.id})"
        )
        assert check(world, "acme", 10)["allowed"] is True

        # A working card, and the clock reaching the retry, settle the invoice in Stripe.
        working = world.stripe.v1.payment_methods.attach(
            "pm_card_visa", params={"customer": stripe_id}
        )
        world.stripe.v1.customers.update(
            stripe_id, params={"invoice_settings": {"default_payment_method": working.id}}
        )
        world.advance(clock_id, int(retry_at) + HOUR)
        [paid] = world.invoices(stripe_id)
        assert (paid.id, paid.status, paid.amount_paid) == (invoice.id, "paid", 100)

        # A month on, nothing is owed for the next range: no second invoice.
        next_day = (invoice_day + timedelta(days=32)).replace(day=5)
        world.advance(clock_id, int(next_day.timestamp()) + HOUR)
        assert invoice_credit_overdraft(job_app) == []
        assert len(world.invoices(stripe_id)) == 1
        assert credits(world, "acme")["balance"] == 0
    finally:
        job_app.close()
    assert_books_balance(world)
