"""What the billing page says and does: states in words, the landing after Checkout, the Portal
round trip, the pricing fragment for an iframe, and every action audited as the customer's."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tollgate.db.models import AuditLog
from tollgate.domain.billing_words import status_words, usage_state
from tollgate.services.usage import record_usage

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _signed_in(pages: Callable[..., Any], customer_id: str, **settings: Any) -> Any:
    container, client, key = pages(**settings)
    body = {"id": customer_id, "email": f"b@{customer_id}.example", "name": "Acme"}
    assert client.post("/v1/customers", json=body, headers=key).status_code == 201
    link = client.post(f"/v1/customers/{customer_id}/billing-session", headers=key).json()["url"]
    assert client.get(link).status_code == 200
    return container, client


def _token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_statuses_in_words() -> None:
    words = dict(plan_name="Pro", grace=timedelta(days=7), now=NOW, period_start=NOW)
    trial = status_words(
        status="trialing", trial_end=NOW + timedelta(days=3), period_end=None, **words
    )
    assert trial.label == "Trial" and "ends on November 23, 2026 (3 days left)" in trial.sentence
    canceling = status_words(
        status="canceling", trial_end=None, period_end=NOW + timedelta(days=10), **words
    )
    assert "ends on November 30, 2026" in canceling.sentence and canceling.tone == "warn"
    past_due = status_words(status="past_due", trial_end=None, period_end=None, **words)
    assert "before November 27, 2026" in past_due.sentence and past_due.tone == "bad"
    assert status_words(status="none", trial_end=None, period_end=None, **words).label == "Free"


def test_usage_states_at_80_and_100_percent_and_blocked() -> None:
    assert usage_state(79, 100, hard=False) == "ok"
    assert usage_state(80, 100, hard=False) == "warn"
    assert usage_state(100, 100, hard=False) == "full"
    assert usage_state(1000, 1000, hard=True) == "blocked"
    assert usage_state(5, None, hard=True) == "ok"


def test_after_checkout_the_page_says_the_plan_is_being_activated(
    pages: Callable[..., Any],
) -> None:
    _, client = _signed_in(pages, "org_landing")
    page = client.get("/billing?checkout=success")
    assert 'id="activating"' in page.text and "being activated" in page.text
    assert '<meta http-equiv="refresh" content="3">' in page.text
    canceled = client.get("/billing?checkout=canceled").text
    assert "nothing was charged" in canceled and 'id="activating"' not in canceled


def test_a_free_customer_is_blocked_at_its_hard_limit(pages: Callable[..., Any]) -> None:
    container, client = _signed_in(pages, "org_limit")
    events = [
        {"id": f"e{i}", "customer": "org_limit", "meter": "runs", "value": 500} for i in (1, 2)
    ]

    record_usage(db=container.db, catalog=container.catalog, clock=container.clock, events=events)
    page = client.get("/billing").text
    meter = page[page.index('id="meter-runs"') :]
    assert 'data-state="blocked"' in meter[:80] and "Limit reached: blocked" in meter


def test_portal_opens_stripes_portal_returning_to_the_page_and_is_audited(
    pages: Callable[..., Any], sim: Any
) -> None:
    container, client = _signed_in(pages, "org_portal")
    token = _token(client.get("/billing").text)
    answer = client.post("/billing/portal", data={"csrf_token": token}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith(sim.url)
    with sim.sim.lock:
        sessions = list(sim.sim.platform.all("billing_portal.session"))
    assert sessions[-1]["return_url"] == "http://testserver/billing?done=portal"
    assert "Welcome back" in client.get("/billing?done=portal").text
    with container.db.transaction() as session:
        rows = session.execute(
            sa.select(AuditLog.actor, AuditLog.action).where(AuditLog.object_id == "org_portal")
        ).all()
    assert ("customer:org_portal", "portal") in rows


def test_checkout_from_the_page_returns_to_it_and_is_audited(
    pages: Callable[..., Any], sim: Any
) -> None:
    container, client = _signed_in(pages, "org_buyer")
    token = _token(client.get("/billing").text)
    answer = client.post(
        "/billing/checkout",
        data={"csrf_token": token, "plan": "pro", "interval": "year"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith(sim.url)
    with sim.sim.lock:
        session = list(sim.sim.platform.all("checkout.session"))[-1]
    assert session["success_url"] == "http://testserver/billing?checkout=success"
    assert session["cancel_url"] == "http://testserver/billing?checkout=canceled"
    with container.db.transaction() as db_session:
        audit = db_session.scalars(
            sa.select(AuditLog).where(
                AuditLog.object_id == "org_buyer", AuditLog.action == "checkout"
            )
        ).one()
    assert audit.actor == "customer:org_buyer" and audit.after["plan"] == "pro"
    refused = client.post(
        "/billing/checkout", data={"csrf_token": token, "plan": "enterprise", "interval": "year"}
    )
    assert refused.status_code == 400 and "sales-led" in refused.text


def test_the_pricing_fragment_can_be_framed_where_allowed(pages: Callable[..., Any]) -> None:
    _, client = _signed_in(
        pages,
        "org_embed",
        TOLLGATE_FRAME_ANCESTORS="https://app.example",
        TOLLGATE_BRAND_NAME="Acme",
    )
    fragment = client.get("/pricing/fragment?interval=year")
    assert fragment.status_code == 200
    policy = fragment.headers["content-security-policy"]
    assert (
        "frame-ancestors https://app.example" in policy
        and "x-frame-options" not in fragment.headers
    )
    assert "site-header" not in fragment.text and 'id="plan-card-pro"' in fragment.text
    assert "$290.00" in fragment.text and "per year" in fragment.text
    assert 'id="choose-pro"' in fragment.text  # signed in: its buttons work
    assert "Current plan" in fragment.text  # free is marked
    client.cookies.clear()
    anonymous = client.get("/pricing")
    assert anonymous.status_code == 200 and 'id="choose-pro"' not in anonymous.text
    euros = client.get("/pricing?currency=eur").text
    assert "€11.00" in euros or "11,00" in euros
