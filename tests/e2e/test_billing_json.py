"""The JSON behind the billing page, over HTTP with stripesim's webhooks: previews that change
nothing, invoices by cursor, usage history in buckets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.e2e.conftest import DAY, World
from tests.e2e.test_billing_lifecycle import T0, iso, paying_customer, stripe_subscription

MONTH_END = T0 + 30 * DAY


def _preview(world: World, customer_id: str, expect: int = 200, **body: Any) -> Any:
    return world.call(
        "POST", f"/v1/customers/{customer_id}/subscription/preview", expect, json=body
    )


def test_an_upgrade_preview_shows_the_proration_and_changes_nothing(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "previewer", clock)
    world.advance(clock, T0 + 15 * DAY)
    before = stripe_subscription(world, "previewer")
    preview = _preview(world, "previewer", plan="team", interval="month", seats=3)
    # Half a month left: 1/2 of 3 x $12 for Team, less 1/2 of $29 unused on Pro.
    assert preview["timing"] == "now"
    assert preview["proration"] == {"amount": 1800 - 1450, "currency": "usd"}
    assert preview["next_invoice"] == {"amount": 3600 + 1800 - 1450, "currency": "usd"}
    assert preview["renewal"] == {"amount": 3600, "currency": "usd"}
    assert preview["due_now"]["amount"] == 0
    prorations = [line for line in preview["lines"] if line["proration"]]
    assert sum(line["amount"]["amount"] for line in prorations) == 350 and len(prorations) == 2
    after = stripe_subscription(world, "previewer")
    assert after.items.data[0].price.id == before.items.data[0].price.id
    assert world.subscription("previewer")["plan"] == "pro"


def test_previews_of_a_downgrade_no_change_and_a_first_plan(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "team-org", clock, plan="team", seats=3)
    fewer = _preview(world, "team-org", plan="team", interval="month", seats=2)
    assert fewer["timing"] == "period_end" and fewer["due_now"]["amount"] == 0
    assert fewer["effective_at"] == iso(MONTH_END) or fewer["effective_at"].startswith("2026-10")
    same = _preview(world, "team-org", plan="team", interval="month", seats=3)
    assert same["timing"] == "nothing"
    world.create_customer("newcomer")
    first = _preview(world, "newcomer", plan="pro", interval="month")
    assert (first["timing"], first["trial_days"], first["due_now"]["amount"]) == ("checkout", 14, 0)
    refused = _preview(world, "newcomer", 400, plan="platinum", interval="month")
    assert refused["error"]["param"] == "plan"
    assert world.stripe_count("subscription") == 1


def test_invoices_page_by_cursor_newest_first(world: World) -> None:
    clock = world.test_clock(T0)
    paying_customer(world, "payer", clock)
    world.advance(clock, MONTH_END + 2 * 3600)
    world.advance(clock, MONTH_END + 31 * DAY + 2 * 3600)
    first = world.call("GET", "/v1/customers/payer/invoices?limit=2")
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = world.call("GET", f"/v1/customers/payer/invoices?limit=2&cursor={first['next_cursor']}")
    everything = first["data"] + rest["data"]
    ids = [invoice["id"] for invoice in everything]
    assert len(ids) == len(set(ids)) >= 3 and rest["has_more"] is False
    created = [invoice["created"] for invoice in everything]
    assert created == sorted(created, reverse=True)
    assert {invoice["status"] for invoice in everything} == {"paid"}  # drafts are not shown
    newest = everything[0]
    assert newest["total"] == {"amount": 2900, "currency": "usd"}
    assert newest["hosted_invoice_url"].startswith(world.sim.url)
    assert newest["invoice_pdf"].endswith("/pdf") and newest["number"]
    bad = world.call("GET", "/v1/customers/payer/invoices?cursor=nonsense", 400)
    assert bad["error"]["param"] == "cursor"
    world.call("GET", "/v1/customers/nobody/invoices", 404)


def test_usage_history_sums_recorded_events_per_day_and_hour(world: World) -> None:
    world.create_customer("metered")
    subscription = world.subscription("metered")
    assert subscription["plan"] == "free"
    now = world.container.clock.now().replace(microsecond=0) - timedelta(seconds=30)
    events = [
        {"id": f"u{i}", "customer": "metered", "meter": "runs", "value": value, "timestamp": at}
        for i, (value, at) in enumerate([(5, now), (7, now), (11, now)])
    ]
    events = [{**e, "timestamp": e["timestamp"].isoformat()} for e in events]
    assert world.call("POST", "/v1/usage", json={"events": events})["accepted"] == 3
    day = world.call("GET", "/v1/customers/metered/usage/history?meter=runs")
    assert day["granularity"] == "day" and day["total"] == 23
    today = [b for b in day["buckets"] if b["value"]]
    assert len(today) == 1 and today[0]["start"].endswith("T00:00:00Z")
    assert len(day["buckets"]) >= 28
    start = now.replace(minute=0, second=0).isoformat().replace("+00:00", "Z")
    hours = world.call(
        "GET",
        "/v1/customers/metered/usage/history",
        params={"meter": "runs", "granularity": "hour", "from": start},
    )
    assert hours["buckets"][0] == {"start": start, "value": 23}
    wrong = world.call("GET", "/v1/customers/metered/usage/history?meter=workflows", 400)
    assert wrong["error"]["param"] == "meter"
    backwards = world.call(
        "GET",
        "/v1/customers/metered/usage/history",
        params={"meter": "runs", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        expect=400,
    )
    assert backwards["error"]["param"] == "to"


def test_a_read_key_cannot_open_a_billing_session(world: World) -> None:
    from tollgate.services.api_keys import create_api_key

    world.create_customer("guarded")
    read = create_api_key(db=world.db, clock=world.container.clock, name="r", scope="read")
    answer = world.http.post(
        "/v1/customers/guarded/billing-session",
        headers={"Authorization": f"Bearer {read.secret}"},
    )
    assert answer.status_code == 403
    assert world.call("POST", "/v1/customers/nobody/billing-session", 404)
    spec = world.call("GET", "/openapi.json")["paths"]
    for path in (
        "/v1/customers/{customer_id}/billing-session",
        "/v1/customers/{customer_id}/invoices",
        "/v1/customers/{customer_id}/usage/history",
        "/v1/customers/{customer_id}/subscription/preview",
    ):
        assert path in spec and all(op.get("description") for op in spec[path].values())
