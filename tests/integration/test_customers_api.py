"""Customers, Checkout, Portal and subscription routes: shapes, idempotency, bad input, faults.

Bad input gets a 4xx naming the parameter and changes nothing, in Tollgate or in Stripe (the
simulator's own object counts are checked). Stripe faults during a write are retried by the SDK
with the same idempotency key, so Stripe ends up with exactly one object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from stripesim.testing import RunningSim
from tollgate.api.app import create_app
from tollgate.bootstrap import Container, build_container
from tollgate.config import Settings
from tollgate.db.models import CreditTransaction, Customer, PlanChange
from tollgate.db.unit_of_work import Database
from tollgate.services.api_keys import create_api_key
from tollgate.services.catalog import sync_catalog


@pytest.fixture
def app_api(
    db: Database, sim: RunningSim, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., TestClient]]:
    """Tollgate's API (with a write key in its headers), the catalog synced into Stripe."""
    opened: list[tuple[Container, TestClient]] = []

    def make(**overrides: Any) -> TestClient:
        container = build_container(make_settings(db.url, **overrides))
        if not opened and container.settings.stripe_secret_key is not None:
            sync_catalog(catalog=container.catalog, gateway=container.stripe)
        key = create_api_key(db=container.db, clock=container.clock, name="app", scope="write")
        client = TestClient(create_app(container))
        client.__enter__()
        client.headers["Authorization"] = f"Bearer {key.secret}"
        client.app_state = container  # type: ignore[attr-defined]
        opened.append((container, client))
        return client

    yield make
    for container, client in opened:
        client.__exit__(None, None, None)
        container.close()


@pytest.fixture
def api_client(app_api: Callable[..., TestClient]) -> TestClient:
    return app_api()


def stripe_objects(sim: RunningSim, kind: str) -> list[dict[str, Any]]:
    with sim.sim.lock:
        return list(sim.sim.platform.all(kind))


def customers_in(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Customer)) or 0)


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) <= {"type", "message", "param"} and error["message"]
    return dict(error)


def new_customer(api: TestClient, customer_id: str = "acme", **fields: Any) -> dict[str, Any]:
    answer = api.post(
        "/v1/customers", json={"id": customer_id, "email": "billing@acme.example", **fields}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def queue_fault(sim: RunningSim, kind: str, path: str, method: str = "POST") -> None:
    answer = httpx.post(
        f"{sim.url}/_sim/faults", json={"queue": [{"kind": kind, "path": path, "method": method}]}
    )
    assert answer.status_code == 200


# -- customers ---------------------------------------------------------------------------------


def test_a_new_customer_is_made_in_stripe_with_the_apps_id_and_lands_on_the_default_plan(
    api_client: TestClient, sim: RunningSim
) -> None:
    body = new_customer(api_client, name="Acme Inc", metadata={"org_size": "12"})
    assert body["id"] == "acme" and body["email"] == "billing@acme.example"
    assert (body["plan"], body["status"], body["currency"], body["offline"]) == (
        "free",
        "none",
        "usd",
        False,
    )
    assert body["metadata"] == {"org_size": "12"} and body["created"].endswith("Z")
    (stripe_customer,) = stripe_objects(sim, "customer")
    assert stripe_customer["id"] == body["stripe_customer_id"]
    assert stripe_customer["metadata"] == {"org_size": "12", "tollgate_customer_id": "acme"}
    assert stripe_customer["name"] == "Acme Inc"
    assert api_client.get("/v1/customers/acme").json() == body


def test_the_same_request_twice_is_one_customer_and_a_conflicting_one_is_409(
    api_client: TestClient, sim: RunningSim, db: Database
) -> None:
    first = new_customer(api_client, name="Acme")
    again = api_client.post(
        "/v1/customers", json={"id": "acme", "email": "billing@acme.example", "name": "Acme"}
    )
    assert again.status_code == 200 and again.json() == first
    other = api_client.post(
        "/v1/customers", json={"id": "acme", "email": "other@acme.example", "name": "Acme"}
    )
    error = error_of(other, 409)
    assert error["type"] == "conflict" and "already exists" in error["message"]
    assert len(stripe_objects(sim, "customer")) == 1 and customers_in(db) == 1


def test_an_offline_customer_has_its_plan_and_no_stripe_object(
    api_client: TestClient, sim: RunningSim
) -> None:
    body = new_customer(api_client, "bigco", offline=True, plan="enterprise")
    assert (body["plan"], body["status"], body["stripe_customer_id"]) == (
        "enterprise",
        "active",
        None,
    )
    assert stripe_objects(sim, "customer") == []
    subscription = api_client.get("/v1/customers/bigco/subscription").json()
    assert (subscription["plan"], subscription["status"]) == ("enterprise", "active")
    checkout = api_client.post(
        "/v1/customers/bigco/checkout",
        json={
            "plan": "pro",
            "interval": "month",
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/no",
        },
    )
    assert "offline" in error_of(checkout, 400)["message"]
    moved = api_client.put(
        "/v1/customers/bigco/subscription", json={"plan": "pro", "interval": "year"}
    )
    assert moved.status_code == 200 and moved.json()["plan"] == "pro"
    assert api_client.delete("/v1/customers/bigco/subscription").json()["plan"] == "free"
    assert stripe_objects(sim, "customer") == []


def test_offline_customers_need_no_stripe_key(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_SECRET_KEY="")
    assert new_customer(api, "hand-billed", offline=True)["plan"] == "free"
    online = api.post("/v1/customers", json={"id": "online", "email": "a@b.example"})
    assert error_of(online, 503)["type"] == "configuration_error"


def test_onboarding_credits_are_recorded_once_per_customer(
    app_api: Callable[..., TestClient], db: Database
) -> None:
    api = app_api(TOLLGATE_ONBOARD_CREDITS=500)
    new_customer(api, "creditco", offline=True)
    api.post(
        "/v1/customers", json={"id": "creditco", "email": "billing@acme.example", "offline": True}
    )
    with db.transaction() as session:
        grants = session.scalars(sa.select(CreditTransaction)).all()
        assert [(g.customer_id, g.amount, g.reason) for g in grants] == [
            ("creditco", 500, "onboarding")
        ]


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"email": "a@b.example"}, "id", "Field required"),
        ({"id": "acme"}, "email", "Field required"),
        ({"id": "acme", "email": "not-an-email"}, "email", "email address"),
        ({"id": "a/b", "email": "a@b.example"}, "id", "letters, digits"),
        ({"id": "acme", "email": "a@b.example", "plan": "platinum"}, "plan", "unknown plan"),
        ({"id": "acme", "email": "a@b.example", "plan": "pro"}, "plan", "is paid"),
        ({"id": "acme", "email": "a@b.example", "currency": "gbp"}, "currency", "usd"),
        ({"id": "acme", "email": "a@b.example", "currency": "dollars"}, "currency", "ISO 4217"),
        (
            {"id": "acme", "email": "a@b.example", "offline": True, "stripe_account": "acct_1"},
            "stripe_account",
            "offline",
        ),
        ({"id": "acme", "email": "a@b.example", "stripe_account": "x"}, "stripe_account", "acct_"),
        (
            {"id": "acme", "email": "a@b.example", "metadata": {"tollgate_customer_id": "x"}},
            "metadata.tollgate_customer_id",
            "Tollgate's own",
        ),
        ({"id": "acme", "email": "a@b.example", "colour": "red"}, "colour", "Extra inputs"),
        (
            {"id": "acme", "email": "a@b.example", "address": {"country": "USA"}},
            "address.country",
            "two-letter",
        ),
    ],
)
def test_bad_customer_input_is_400_naming_the_field_and_changes_nothing(
    api_client: TestClient,
    sim: RunningSim,
    db: Database,
    body: dict[str, Any],
    param: str,
    says: str,
) -> None:
    error = error_of(api_client.post("/v1/customers", json=body), 400)
    assert error["param"] == param and says in error["message"], error
    assert customers_in(db) == 0 and stripe_objects(sim, "customer") == []


def test_an_unknown_connected_account_is_400_and_leaves_nothing(
    api_client: TestClient, sim: RunningSim, db: Database
) -> None:
    answer = api_client.post(
        "/v1/customers",
        json={"id": "tenant", "email": "a@b.example", "stripe_account": "acct_nosuchaccount"},
    )
    assert error_of(answer, 400)["param"] == "stripe_account"
    assert customers_in(db) == 0


def test_reading_needs_a_key_and_writing_needs_the_write_scope(
    api_client: TestClient, container: Container, db: Database
) -> None:
    new_customer(api_client)
    read = create_api_key(db=container.db, clock=container.clock, name="r", scope="read").secret
    headers = {"Authorization": f"Bearer {read}"}
    assert api_client.get("/v1/customers/acme", headers=headers).status_code == 200
    refused = api_client.post(
        "/v1/customers", headers=headers, json={"id": "other", "email": "a@b.example"}
    )
    assert error_of(refused, 403)["type"] == "permission_error"
    patch = api_client.patch("/v1/customers/acme", headers=headers, json={"name": "X"})
    assert patch.status_code == 403
    assert error_of(api_client.get("/v1/customers/acme", headers={"Authorization": ""}), 401)
    assert customers_in(db) == 1


def test_an_unknown_customer_is_404_on_every_route(api_client: TestClient) -> None:
    urls = "https://app.example/x"
    for method, path, body in [
        ("GET", "/v1/customers/ghost", None),
        ("PATCH", "/v1/customers/ghost", {"name": "x"}),
        (
            "POST",
            "/v1/customers/ghost/checkout",
            {"plan": "pro", "interval": "month", "success_url": urls, "cancel_url": urls},
        ),
        ("POST", "/v1/customers/ghost/portal", {"return_url": urls}),
        ("GET", "/v1/customers/ghost/subscription", None),
        ("PUT", "/v1/customers/ghost/subscription", {"plan": "pro", "interval": "month"}),
        ("DELETE", "/v1/customers/ghost/subscription", None),
        ("POST", "/v1/customers/ghost/subscription/resume", None),
    ]:
        error = error_of(api_client.request(method, path, json=body), 404)
        assert error["type"] == "not_found" and "ghost" in error["message"], (method, path)


# -- PATCH --------------------------------------------------------------------------------------


def test_patch_changes_the_customer_in_stripe_and_in_tollgate(
    api_client: TestClient, sim: RunningSim
) -> None:
    new_customer(api_client, name="Acme", metadata={"tier": "a", "keep": "1"})
    answer = api_client.patch(
        "/v1/customers/acme",
        json={
            "email": "finance@acme.example",
            "name": "Acme GmbH",
            "address": {"line1": "Hauptstr. 1", "city": "Berlin", "country": "de"},
            "metadata": {"tier": "b", "keep": None},
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["email"], body["name"], body["metadata"]) == (
        "finance@acme.example",
        "Acme GmbH",
        {"tier": "b"},
    )
    assert body["address"] == {"line1": "Hauptstr. 1", "city": "Berlin", "country": "DE"}
    (stripe_customer,) = stripe_objects(sim, "customer")
    assert stripe_customer["email"] == "finance@acme.example"
    assert stripe_customer["address"]["country"] == "DE"
    assert stripe_customer["metadata"] == {"tier": "b", "tollgate_customer_id": "acme"}


def test_a_bad_patch_is_400_and_changes_nothing(api_client: TestClient, sim: RunningSim) -> None:
    before = new_customer(api_client, name="Acme")
    for body, param in [
        ({"email": "nope"}, "email"),
        ({"address": {"zip": "123"}}, "address.zip"),
        ({"metadata": {"tollgate_customer_id": "x"}}, "metadata.tollgate_customer_id"),
        ({"plan": "pro"}, "plan"),
    ]:
        assert error_of(api_client.patch("/v1/customers/acme", json=body), 400)["param"] == param
    assert api_client.get("/v1/customers/acme").json() == before
    assert stripe_objects(sim, "customer")[0]["email"] == "billing@acme.example"


# -- Checkout and the portal ----------------------------------------------------------------------


def checkout_body(**fields: Any) -> dict[str, Any]:
    return {
        "plan": "pro",
        "interval": "month",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/no",
        **fields,
    }


def test_checkout_has_the_plan_price_its_overage_and_the_plans_trial(
    api_client: TestClient, sim: RunningSim
) -> None:
    new_customer(api_client)
    answer = api_client.post("/v1/customers/acme/checkout", json=checkout_body())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"session_id", "url"} and body["url"].endswith(body["session_id"])
    (session,) = stripe_objects(sim, "checkout.session")
    keys = sorted(item["price"]["lookup_key"] for item in session["_line_items"])
    assert keys == [
        "tollgate_pro_cpu_seconds_month_usd",
        "tollgate_pro_month_usd",
        "tollgate_pro_runs_month_usd",
        "tollgate_pro_storage_gb_month_usd",
    ]
    assert session["client_reference_id"] == "acme"
    assert int(session["_subscription_data"]["trial_period_days"]) == 14
    assert session["automatic_tax"]["enabled"] is False
    again = api_client.post("/v1/customers/acme/checkout", json=checkout_body())
    assert again.json() == body  # the same request in the same state: the same session
    assert len(stripe_objects(sim, "checkout.session")) == 1


def test_checkout_takes_seats_trial_override_currency_and_automatic_tax(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_AUTOMATIC_TAX=True, TOLLGATE_TRIAL_END_BEHAVIOR="cancel")
    new_customer(api, currency="eur")
    answer = api.post(
        "/v1/customers/acme/checkout",
        json=checkout_body(plan="team", seats=5, trial_days=0),
    )
    assert answer.status_code == 200, answer.text
    (session,) = stripe_objects(sim, "checkout.session")
    base = next(
        i for i in session["_line_items"] if i["price"]["lookup_key"] == "tollgate_team_month_eur"
    )
    assert base["quantity"] == 5 and session["currency"] == "eur"
    assert session["automatic_tax"]["enabled"] is True
    # As Stripe requires with automatic tax: the address and tax IDs typed are saved on the
    # existing customer, which Stripe taxes by.
    assert session["billing_address_collection"] == "required"
    assert session["tax_id_collection"] == {"enabled": True, "required": "never"}
    assert session["_customer_update"] == {"address": "auto", "name": "auto"}
    data = session["_subscription_data"]
    assert "trial_period_days" not in data
    assert data["trial_settings"]["end_behavior"]["missing_payment_method"] == "cancel"


@pytest.mark.parametrize(
    ("fields", "status", "param", "says"),
    [
        ({"plan": "platinum"}, 400, "plan", "unknown plan"),
        ({"plan": "enterprise", "interval": "year"}, 400, "plan", "sales-led"),
        ({"plan": "free"}, 400, "plan", "free"),
        ({"interval": "week"}, 400, "interval", "not a billing interval"),
        ({"plan": "team", "seats": 1}, 400, "seats", "2 to 200"),
        ({"plan": "team", "seats": 201}, 400, "seats", "2 to 200"),
        ({"plan": "team", "seats": -3}, 400, "seats", "at least 1"),
        ({"seats": 4}, 400, "seats", "not priced per seat"),
        ({"trial_days": -1}, 400, "trial_days", "from 0"),
        ({"success_url": "/relative"}, 400, "success_url", "absolute"),
        ({"cancel_url": None}, 400, "cancel_url", "valid string"),
        ({"surprise": 1}, 400, "surprise", "Extra inputs"),
    ],
)
def test_bad_checkout_input_is_4xx_and_opens_no_session(
    api_client: TestClient,
    sim: RunningSim,
    fields: dict[str, Any],
    status: int,
    param: str,
    says: str,
) -> None:
    new_customer(api_client)
    answer = api_client.post("/v1/customers/acme/checkout", json=checkout_body(**fields))
    error = error_of(answer, status)
    assert error["param"] == param and says in error["message"], error
    assert stripe_objects(sim, "checkout.session") == []


def test_a_plan_not_priced_in_the_customers_currency_is_400_naming_its_currencies(
    api_client: TestClient, sim: RunningSim
) -> None:
    new_customer(api_client, currency="eur")
    answer = api_client.post("/v1/customers/acme/checkout", json=checkout_body(plan="pro"))
    error = error_of(answer, 400)
    assert error["param"] == "currency"
    assert error["message"] == "plan 'pro' has no price in eur; it is priced in usd"
    assert stripe_objects(sim, "checkout.session") == []


def test_the_portal_answers_a_url_for_the_customer(api_client: TestClient, sim: RunningSim) -> None:
    customer = new_customer(api_client)
    answer = api_client.post(
        "/v1/customers/acme/portal", json={"return_url": "https://app.example/account"}
    )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"url"}
    (session,) = stripe_objects(sim, "billing_portal.session")
    assert session["customer"] == customer["stripe_customer_id"]
    assert answer.json()["url"] == session["url"]
    bad = api_client.post("/v1/customers/acme/portal", json={"return_url": "ftp://x"})
    assert error_of(bad, 400)["param"] == "return_url"
    assert error_of(api_client.post("/v1/customers/acme/portal", json={}), 400)["param"] == (
        "return_url"
    )
    assert len(stripe_objects(sim, "billing_portal.session")) == 1


# -- subscriptions: bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"plan": "platinum", "interval": "month"}, "plan", "unknown plan"),
        ({"plan": "pro", "interval": "fortnight"}, "interval", "not a billing interval"),
        ({"plan": "team", "interval": "month", "seats": -1}, "seats", "at least 1"),
        ({"plan": "team", "interval": "month", "seats": 500}, "seats", "2 to 200"),
        ({"plan": "pro", "interval": "month", "proration": "sometimes"}, "proration", "proration"),
        (
            {"plan": "pro", "interval": "month", "days_until_due": 30},
            "days_until_due",
            "send_invoice",
        ),
        (
            {"plan": "pro", "interval": "month", "collection_method": "send_invoice"},
            "days_until_due",
            "needs days_until_due",
        ),
        (
            {"plan": "pro", "interval": "month", "collection_method": "cheque"},
            "collection_method",
            "not a collection method",
        ),
        ({"interval": "month"}, "plan", "Field required"),
    ],
)
def test_bad_subscription_input_is_400_and_changes_nothing(
    api_client: TestClient,
    sim: RunningSim,
    db: Database,
    body: dict[str, Any],
    param: str,
    says: str,
) -> None:
    new_customer(api_client)
    error = error_of(api_client.put("/v1/customers/acme/subscription", json=body), 400)
    assert error["param"] == param and says in error["message"], error
    assert stripe_objects(sim, "subscription") == []
    with db.transaction() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PlanChange)) == 0


def test_cancel_and_resume_without_a_subscription_are_404(api_client: TestClient) -> None:
    new_customer(api_client)
    assert (
        "no subscription"
        in error_of(api_client.delete("/v1/customers/acme/subscription"), 404)["message"]
    )
    resume = api_client.post("/v1/customers/acme/subscription/resume")
    assert "no subscription" in error_of(resume, 404)["message"]
    subscription = api_client.get("/v1/customers/acme/subscription").json()
    assert (subscription["plan"], subscription["status"], subscription["interval"]) == (
        "free",
        "none",
        None,
    )


def test_a_direct_subscription_without_a_card_is_402_and_leaves_nothing(
    api_client: TestClient, sim: RunningSim
) -> None:
    new_customer(api_client)
    answer = api_client.put(
        "/v1/customers/acme/subscription",
        json={"plan": "pro", "interval": "month", "trial_days": 0},
    )
    assert error_of(answer, 402)["type"] == "card_declined"
    assert all(sub["status"] == "canceled" for sub in stripe_objects(sim, "subscription"))


# -- Stripe faults during writes ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "429", "timeout"])
def test_a_stripe_fault_while_creating_the_customer_makes_one_stripe_customer(
    app_api: Callable[..., TestClient], sim: RunningSim, kind: str
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    queue_fault(sim, kind, "/v1/customers")
    body = new_customer(api)
    (stripe_customer,) = stripe_objects(sim, "customer")
    assert body["stripe_customer_id"] == stripe_customer["id"]


@pytest.mark.parametrize("kind", ["500", "timeout"])
def test_a_stripe_fault_while_opening_checkout_makes_one_session(
    app_api: Callable[..., TestClient], sim: RunningSim, kind: str
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api)
    queue_fault(sim, kind, "/v1/checkout/sessions")
    answer = api.post("/v1/customers/acme/checkout", json=checkout_body())
    assert answer.status_code == 200, answer.text
    (session,) = stripe_objects(sim, "checkout.session")
    assert answer.json()["session_id"] == session["id"]


@pytest.mark.parametrize("kind", ["500", "timeout"])
def test_a_stripe_fault_while_subscribing_makes_one_subscription(
    app_api: Callable[..., TestClient], sim: RunningSim, kind: str
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api, "bigco")
    queue_fault(sim, kind, "/v1/subscriptions")
    answer = api.put(
        "/v1/customers/bigco/subscription", json={"plan": "enterprise", "interval": "year"}
    )
    assert answer.status_code == 200, answer.text
    (subscription,) = stripe_objects(sim, "subscription")
    assert answer.json()["stripe_subscription_id"] == subscription["id"]
    assert answer.json()["collection_method"] == "send_invoice"


def test_stripe_down_for_good_keeps_the_customer_and_the_same_request_finishes_it(
    app_api: Callable[..., TestClient], sim: RunningSim, db: Database
) -> None:
    api = app_api(STRIPE_MAX_RETRIES=0)
    queue_fault(sim, "500", "/v1/customers")
    answer = api.post("/v1/customers", json={"id": "acme", "email": "billing@acme.example"})
    assert error_of(answer, 503)["type"] == "stripe_unavailable"
    assert api.get("/v1/customers/acme").json()["stripe_customer_id"] is None
    again = api.post("/v1/customers", json={"id": "acme", "email": "billing@acme.example"})
    assert again.status_code == 200 and again.json()["stripe_customer_id"].startswith("cus_")
    assert len(stripe_objects(sim, "customer")) == 1 and customers_in(db) == 1


def test_an_idempotency_key_names_the_request_and_reusing_it_for_another_is_409(
    api_client: TestClient, sim: RunningSim
) -> None:
    new_customer(api_client)
    first = api_client.post(
        "/v1/customers/acme/checkout", json=checkout_body(), headers={"Idempotency-Key": "k1"}
    )
    again = api_client.post(
        "/v1/customers/acme/checkout", json=checkout_body(), headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 200 and again.json() == first.json()
    other = api_client.post(
        "/v1/customers/acme/checkout", json=checkout_body(), headers={"Idempotency-Key": "k2"}
    )
    assert other.json()["session_id"] != first.json()["session_id"]
    reused = api_client.post(
        "/v1/customers/acme/checkout",
        json=checkout_body(interval="year"),
        headers={"Idempotency-Key": "k1"},
    )
    assert error_of(reused, 409)["type"] == "idempotency_error"
    assert len(stripe_objects(sim, "checkout.session")) == 2


def events_of(sim: RunningSim, event_type: str) -> list[dict[str, Any]]:
    return [event for event in stripe_objects(sim, "event") if event["type"] == event_type]


def test_a_timeout_while_opening_the_portal_makes_one_session(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api)
    queue_fault(sim, "timeout", "/v1/billing_portal/sessions")
    answer = api.post("/v1/customers/acme/portal", json={"return_url": "https://app.example/a"})
    assert answer.status_code == 200, answer.text
    assert len(stripe_objects(sim, "billing_portal.session")) == 1


def test_a_timeout_while_changing_the_plan_changes_it_once(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api)
    trial = api.put("/v1/customers/acme/subscription", json={"plan": "pro", "interval": "month"})
    assert trial.json()["status"] == "trialing", trial.text
    queue_fault(sim, "timeout", "/v1/subscriptions/")
    answer = api.put(
        "/v1/customers/acme/subscription", json={"plan": "team", "interval": "month", "seats": 4}
    )
    assert (answer.json()["plan"], answer.json()["seats"]) == ("team", 4), answer.text
    assert len(events_of(sim, "customer.subscription.updated")) == 1
    (subscription,) = stripe_objects(sim, "subscription")
    assert len(subscription["_item_ids"]) == 2  # Team's price and its runs overage


def test_a_fault_while_canceling_cancels_once(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api)
    api.put("/v1/customers/acme/subscription", json={"plan": "pro", "interval": "month"})
    queue_fault(sim, "timeout", "/v1/subscriptions/", method="DELETE")
    answer = api.delete("/v1/customers/acme/subscription")
    assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
    assert len(events_of(sim, "customer.subscription.deleted")) == 1


def test_a_fault_while_changing_the_customer_changes_it_once(
    app_api: Callable[..., TestClient], sim: RunningSim
) -> None:
    api = app_api(STRIPE_TIMEOUT=1)
    sim.sim.faults.timeout_seconds = 1.5
    new_customer(api)
    queue_fault(sim, "500", "/v1/customers/")
    answer = api.patch("/v1/customers/acme", json={"name": "Acme Inc"})
    assert answer.status_code == 200 and answer.json()["name"] == "Acme Inc", answer.text
    assert len(events_of(sim, "customer.updated")) == 1
