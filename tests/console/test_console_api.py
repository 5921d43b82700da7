"""The JSON behind the console, on SQLite and PostgreSQL: customer search, filters and cursors;
a customer's timeline; events with replay; the outbox with retry; the overview's figures;
reconciliation runs; API keys listed and revoked; payment fees."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.console.conftest import T0, Desk, event_obj
from tests.integration.test_webhooks import subscription_obj
from tollgate.api.app import create_app
from tollgate.bootstrap import build_container
from tollgate.config import Settings
from tollgate.db.tables import AUDIT_LOG, METER_OUTBOX, NOTIFICATIONS, RECONCILIATION_RUNS
from tollgate.services.outbox import queue_app_event, queue_email


def _everything(desk: Desk, path: str, **params: object) -> list[dict]:
    seen: list[dict] = []
    cursor = None
    while True:
        page = desk.get(path, **params, **({"cursor": cursor} if cursor else {}))
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_customers_are_searched_filtered_sorted_and_paged(desk: Desk) -> None:
    ids = {}
    for number in range(7):
        ids[f"org-{number}"] = desk.customer(f"org-{number}", email=f"team{number}@corp.example")
    desk.subscribe(ids["org-1"], status="past_due")
    desk.subscribe(ids["org-2"], status="trialing", trial_end=T0 + 86_400 * 14)
    desk.subscribe(ids["org-3"], cancel_at_period_end=True)
    desk.subscribe(ids["org-4"])
    made = desk.call(
        "POST",
        "/v1/customers",
        json={"id": "offline-co", "email": "o@x.example", "offline": True, "plan": "pro"},
    )
    assert made.status_code == 201, made.text

    every = _everything(desk, "/v1/customers", limit=2)
    assert sorted(c["id"] for c in every) == sorted([*ids, "offline-co"])
    assert len({c["id"] for c in every}) == len(every)  # no repeats across pages

    by_status = {c["id"]: c["status"] for c in every}
    assert by_status["org-1"] == "past_due" and by_status["org-3"] == "canceling"
    assert by_status["org-0"] == "none" and by_status["offline-co"] == "active"
    assert [c["id"] for c in desk.get("/v1/customers", status="past_due")["data"]] == ["org-1"]
    assert [c["id"] for c in desk.get("/v1/customers", status="canceling")["data"]] == ["org-3"]
    active = {c["id"] for c in desk.get("/v1/customers", status="active")["data"]}
    assert active == {"offline-co", "org-4"}
    no_plan = {c["id"] for c in desk.get("/v1/customers", status="none")["data"]}
    assert no_plan == {"org-0", "org-5", "org-6"}
    assert [c["id"] for c in desk.get("/v1/customers", offline="true")["data"]] == ["offline-co"]
    on_pro = {c["id"] for c in desk.get("/v1/customers", plan="pro")["data"]}
    assert on_pro == {"org-1", "org-2", "org-3", "org-4", "offline-co"}

    assert [c["id"] for c in desk.get("/v1/customers", q="TEAM5@")["data"]] == ["org-5"]
    assert [c["id"] for c in desk.get("/v1/customers", q=ids["org-6"])["data"]] == ["org-6"]
    assert desk.get("/v1/customers", q="100%_")["data"] == []

    by_email = _everything(desk, "/v1/customers", sort="email", order="asc", limit=3)
    emails = [c["email"] for c in by_email]
    assert emails == sorted(emails)
    by_id_desc = [c["id"] for c in _everything(desk, "/v1/customers", sort="id", limit=4)]
    assert by_id_desc == sorted(by_id_desc, reverse=True)


def test_bad_customer_queries_are_clear_errors(desk: Desk) -> None:
    for params, param in (
        ({"status": "happy"}, "status"),
        ({"plan": "platinum"}, "plan"),
        ({"sort": "mrr"}, "sort"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"limit": "0"}, "limit"),
    ):
        answer = desk.api.get(
            "/v1/customers", params=params, headers={"Authorization": f"Bearer {desk.read_key}"}
        )
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"].get("param") == param
    assert desk.api.get("/v1/customers").status_code == 401


def test_a_customers_timeline_merges_every_kind_newest_first(desk: Desk) -> None:
    cus_id = desk.customer("acme")
    sub_id = desk.subscribe(cus_id)
    desk.deliver(
        event_obj(
            "customer.subscription.updated",
            subscription_obj(sub_id, cus_id, seats=3),
            created=T0 + 60,
        )
    )
    with desk.db.engine.begin() as connection:
        later = desk.clock.now() + timedelta(minutes=5)
        queue_email(
            connection,
            customer_id="acme",
            template="trial_started",
            cause="c1",
            facts={},
            now=later,
        )
        queue_app_event(
            connection,
            event_type="customer.entitlements_changed",
            customer_id="acme",
            data={},
            cause="c2",
            now=later + timedelta(seconds=1),
        )
    timeline = desk.get("/v1/customers/acme/timeline")["data"]
    kinds = {entry["kind"] for entry in timeline}
    assert {"stripe_event", "audit", "email", "app_webhook"} <= kinds
    times = [entry["at"] for entry in timeline]
    assert times == sorted(times, reverse=True)
    assert timeline[0]["kind"] == "app_webhook"
    titles = [e["title"] for e in timeline if e["kind"] == "stripe_event"]
    assert "customer.subscription.updated" in titles and "customer.created" in titles

    paged = _everything(desk, "/v1/customers/acme/timeline", limit=2)
    assert len(paged) == len(timeline)
    missing = desk.api.get(
        "/v1/customers/nobody/timeline", headers={"Authorization": f"Bearer {desk.read_key}"}
    )
    assert missing.status_code == 404


def test_a_timeline_pages_through_many_entries_at_one_time_once_each(desk: Desk) -> None:
    """More entries share a time than a page holds, in one object and across kinds: the cursor
    (time, kind, ref) still shows each once, in the order of the whole timeline."""
    cus_id = desk.customer("tied")
    same = desk.clock.now()
    with desk.db.engine.begin() as connection:
        for number in range(7):
            connection.execute(
                AUDIT_LOG.insert().values(
                    at=same,
                    actor="operator:ada",
                    object_type="customer",
                    object_id="tied",
                    action=f"note_{number}",
                )
            )
            queue_email(
                connection,
                customer_id="tied",
                template="trial_started",
                cause=f"tie-{number}",
                facts={},
                now=same,
            )
    whole = desk.get("/v1/customers/tied/timeline", limit=200)["data"]
    assert len(whole) >= 15 and cus_id
    for size in (1, 2, 3, 5):
        paged = _everything(desk, "/v1/customers/tied/timeline", limit=size)
        assert [(e["kind"], e["ref"]) for e in paged] == [(e["kind"], e["ref"]) for e in whole]


def test_a_failed_event_is_listed_and_its_replay_succeeds(desk: Desk) -> None:
    cus_id = desk.customer("acme")
    sub_id = "sub_replayme"
    event = event_obj("customer.subscription.created", subscription_obj(sub_id, cus_id))
    desk.rename("subscription_items", "subscription_items_away")
    try:
        assert desk.post_event(event).status_code == 500
    finally:
        desk.rename("subscription_items_away", "subscription_items")
    failed = desk.get("/v1/events", status="failed")["data"]
    assert [e["id"] for e in failed] == [event["id"]]
    assert failed[0]["customer"] == "acme" and failed[0]["attempts"] == 1
    assert "subscription_items" in failed[0]["last_error"]
    assert {e["type"] for e in desk.get("/v1/events", type="customer.*")["data"]} == {
        "customer.created",
        "customer.subscription.created",
    }
    raw = desk.get(f"/v1/events/{event['id']}")
    assert raw["payload"]["data"]["object"]["id"] == sub_id

    refused = desk.call("POST", f"/v1/events/{event['id']}/replay", key=desk.read_key)
    assert refused.status_code == 403
    replayed = desk.call("POST", f"/v1/events/{event['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["outcome"] == "succeeded"
    assert replayed.json()["status"] == "succeeded"
    assert desk.get("/v1/customers/acme/subscription")["status"] == "active"
    assert desk.call("POST", "/v1/events/evt_nope/replay").status_code == 404


def test_the_outbox_lists_emails_and_webhooks_and_retries_a_failed_one(desk: Desk) -> None:
    desk.customer("acme")
    now = desk.clock.now()
    with desk.db.engine.begin() as connection:
        queue_email(
            connection,
            customer_id="acme",
            template="payment_failed_soft",
            cause="x",
            facts={},
            now=now,
        )
        queue_app_event(
            connection,
            event_type="customer.entitlements_changed",
            customer_id="acme",
            data={},
            cause="y",
            now=now + timedelta(seconds=1),
        )
        connection.execute(
            sa.update(NOTIFICATIONS).values(status="failed", attempts=12, last_error="550 no")
        )
    items = desk.get("/v1/outbox")["data"]
    assert [i["kind"] for i in items] == ["app_webhook", "email"]
    email = items[1]
    assert email["id"].startswith("email_") and email["status"] == "failed"
    assert desk.get("/v1/outbox", status="failed", kind="email")["data"][0]["id"] == email["id"]
    retried = desk.call("POST", f"/v1/outbox/{email['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    assert desk.call("POST", "/v1/outbox/email_999/retry").status_code == 404


def test_usage_waiting_for_stripe_is_the_list_behind_the_sync_lag(desk: Desk) -> None:
    desk.customer("acme")
    now = desk.clock.now()
    with desk.db.engine.begin() as connection:
        for number, status in enumerate(("pending", "failed", "sent")):
            connection.execute(
                sa.insert(METER_OUTBOX).values(
                    customer_id="acme",
                    stripe_customer_id="cus_acme",
                    feature="runs",
                    event_name="runs",
                    period_start=now - timedelta(days=1),
                    period_end=now + timedelta(days=29),
                    value=10 + number,
                    occurred_at=now,
                    status=status,
                    attempts=3 if status == "failed" else 0,
                    last_error="meter not found" if status == "failed" else None,
                    created_at=now - timedelta(minutes=30 - number),
                )
            )
    lag = desk.get("/v1/summary")["usage_sync_lag_seconds"]
    assert lag is not None and lag >= 30 * 60 - 1
    waiting = desk.get("/v1/outbox", kind="usage", status="pending")["data"]
    assert [(i["kind"], i["name"], i["status"]) for i in waiting] == [("usage", "runs", "pending")]
    assert waiting[0]["id"].startswith("usage_")
    assert len(desk.get("/v1/outbox", kind="usage")["data"]) == 3
    failed = desk.get("/v1/outbox", kind="usage", status="failed")["data"][0]
    assert failed["last_error"] == "meter not found"
    retried = desk.call("POST", f"/v1/outbox/{failed['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    sent = desk.get("/v1/outbox", kind="usage", status="sent")["data"][0]
    assert desk.call("POST", f"/v1/outbox/{sent['id']}/retry").status_code == 400
    assert desk.call("POST", "/v1/outbox/usage_999/retry").status_code == 404
    assert desk.call("GET", "/v1/outbox", params={"kind": "meter"}).status_code == 400


def test_the_summary_has_mrr_statuses_trials_and_health(desk: Desk) -> None:
    for number, status in enumerate(("active", "active", "past_due", "trialing")):
        cus_id = desk.customer(f"org-{number}")
        desk.subscribe(
            cus_id,
            status=status,
            trial_end=int(desk.clock.now().timestamp()) + 3 * 86_400
            if status == "trialing"
            else None,
        )
    desk.charge(desk.customer("failing"), 4900, status="failed", created=desk.clock.now())
    with desk.db.engine.begin() as connection:
        connection.execute(
            sa.insert(RECONCILIATION_RUNS).values(
                trigger="cli",
                window_start=desk.clock.now() - timedelta(days=1),
                window_end=desk.clock.now(),
                started_at=desk.clock.now(),
                finished_at=desk.clock.now(),
                status="succeeded",
                checked=40,
                counts={"missing_locally": 2, "status": 1},
                healed=3,
            )
        )
    figures = desk.get("/v1/summary")
    pro = desk.container.catalog.plan("pro").price_for("month", "usd").amount_minor
    assert figures["mrr"] == [
        {"plan": "pro", "currency": "usd", "subscriptions": 3, "mrr": 3 * pro, "arr": 36 * pro}
    ]
    assert figures["mrr_total"] == [{"amount": 3 * pro, "currency": "usd"}]
    assert figures["customers_by_status"]["active"] == 2
    assert figures["customers_by_status"]["past_due"] == 1
    assert figures["trials_ending_this_week"] == 1
    assert (
        figures["failed_payments"] == {"count": 1, "amounts": [{"amount": 4900, "currency": "usd"}]}
        or figures["failed_payments"]["count"] == 0
    )  # charge created before this month
    assert figures["last_reconciliation"]["drifts"] == 3
    assert figures["webhooks"]["failed"] == 0


def test_reconciliation_runs_are_listed_newest_first(desk: Desk) -> None:
    with desk.db.engine.begin() as connection:
        for checked in (10, 20):
            connection.execute(
                sa.insert(RECONCILIATION_RUNS).values(
                    trigger="nightly",
                    window_start=desk.clock.now(),
                    window_end=desk.clock.now(),
                    started_at=desk.clock.now(),
                    status="succeeded",
                    checked=checked,
                    counts={},
                    healed=0,
                )
            )
    runs = desk.get("/v1/reconciliations", limit=1)
    assert runs["data"][0]["checked"] == 20 and runs["has_more"]
    assert desk.get("/v1/reconciliations", cursor=runs["next_cursor"])["data"][0]["checked"] == 10


def test_api_keys_are_listed_without_secrets_and_a_revoked_key_stops(desk: Desk) -> None:
    made = desk.call("POST", "/v1/api-keys", json={"name": "frontend", "scope": "read"}).json()
    listed = desk.call("GET", "/v1/api-keys").json()["data"]
    assert "frontend" in [k["name"] for k in listed]
    assert all("secret" not in k for k in listed)
    assert made["secret"] not in str(listed)
    assert desk.call("GET", "/v1/api-keys", key=desk.read_key).status_code == 403
    revoked = desk.call("DELETE", f"/v1/api-keys/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = desk.call("GET", "/v1/summary", key=made["secret"])
    assert refused.status_code == 401
    assert desk.call("DELETE", "/v1/api-keys/nope").status_code == 404


def test_a_revoked_key_stops_at_once_here_and_within_10_seconds_on_another_server(
    desk: Desk, make_settings: Callable[..., Settings]
) -> None:
    """The documented delay (10 s, each server's key cache): a second server over the same
    database that used the key a moment before keeps it no longer than that."""
    made = desk.call("POST", "/v1/api-keys", json={"name": "mobile", "scope": "read"}).json()
    other = build_container(make_settings(desk.db.url))
    try:
        with TestClient(create_app(other)) as second:
            headers = {"Authorization": f"Bearer {made['secret']}"}
            assert desk.call("GET", "/v1/summary", key=made["secret"]).status_code == 200
            assert second.get("/v1/summary", headers=headers).status_code == 200  # cached there
            revoked_at = time.monotonic()
            assert desk.call("DELETE", f"/v1/api-keys/{made['id']}").status_code == 200
            assert desk.call("GET", "/v1/summary", key=made["secret"]).status_code == 401
            while second.get("/v1/summary", headers=headers).status_code == 200:
                assert time.monotonic() - revoked_at < 10.5, "still accepted after 10 s"
                time.sleep(0.25)
            assert second.get("/v1/summary", headers=headers).status_code == 401
    finally:
        other.close()


def test_fees_by_method_per_customer_and_who_saves_with_ach(desk: Desk) -> None:
    card = desk.customer("card-co")
    bank = desk.customer("bank-co")
    small = desk.customer("small-co")
    desk.charge(card, 100_000)  # $1,000 by card: 2.9 % + 30¢ = $29.30
    desk.charge(bank, 100_000, method="us_bank_account")  # ACH 0.8 % = $8, capped at $5
    desk.charge(small, 500)  # $5 by card: 15¢ + 30¢ = 45¢; ACH would be 4¢
    fees = desk.get("/v1/fees")
    by_customer = {c["customer"]: c for c in fees["customers"]}
    assert by_customer["card-co"]["fees"] == 2930
    assert by_customer["card-co"]["fees_if_ach"] == 500
    assert by_customer["bank-co"]["fees"] == 500
    assert by_customer["bank-co"]["fees_by_method"] == {"ach": 500}
    assert by_customer["small-co"]["fees"] == 45
    assert fees["would_save_with_ach"] == ["card-co", "small-co"]
    assert fees["totals"] == [
        {
            "currency": "usd",
            "charges": 3,
            "charged": 200_500,
            "fees": 2930 + 500 + 45,
            "fees_card": 2975,
            "fees_ach": 500,
            "saving_with_ach": 2430 + 41,
        }
    ]
    # The overview's figure sums the same fees in SQL (per amount, not per charge).
    assert desk.get("/v1/summary")["payment_fees"] == {
        "days": 30,
        "amounts": [{"amount": 2930 + 500 + 45, "currency": "usd"}],
    }


def test_customers_over_80_percent_of_a_limit_are_found(desk: Desk) -> None:
    for org in ("heavy-co", "light-co"):
        made = desk.call(
            "POST",
            "/v1/customers",
            json={"id": org, "email": f"{org}@x.example", "offline": True, "plan": "pro"},
        )
        assert made.status_code == 201, made.text
    for org, value in (("heavy-co", 85_000), ("light-co", 10_000)):
        sent = desk.call(
            "POST",
            "/v1/usage",
            json={"events": [{"id": f"{org}-1", "customer": org, "meter": "runs", "value": value}]},
        )
        assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    assert [c["id"] for c in desk.get("/v1/customers", over="80")["data"]] == ["heavy-co"]
    thresholds = [
        e
        for e in desk.get("/v1/customers/heavy-co/timeline")["data"]
        if e["kind"] == "usage_threshold"
    ]
    assert thresholds and thresholds[0]["title"] == "runs passed 80 %"
