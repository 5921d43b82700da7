"""The console's pages over HTTP (no browser): sign-in and its cookie, every page answering,
roles and CSRF enforced on actions, and actions audited under the operator's name."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.console.conftest import Desk
from tollgate.db.tables import AUDIT_LOG
from tollgate.services.operators import create_operator

PASSWORD = "console password 1"


def _sign_in(desk: Desk, name: str, role: str) -> None:
    create_operator(db=desk.db, clock=desk.clock, name=name, role=role, password=PASSWORD)
    form = desk.api.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    answer = desk.api.post(
        "/console/sign-in",
        data={"csrf_token": token.group(1), "name": name, "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"]
    assert "tg_console=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; behind HTTPS it is set


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_pages_need_a_session(desk: Desk) -> None:
    answer = desk.api.get("/console/customers", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in"


def test_a_wrong_password_is_refused_and_a_form_without_token_too(desk: Desk) -> None:
    create_operator(db=desk.db, clock=desk.clock, name="ada", role="admin", password=PASSWORD)
    form = desk.api.get("/console/sign-in")
    wrong = desk.api.post(
        "/console/sign-in",
        data={"csrf_token": _csrf(form.text), "name": "ada", "password": "nope nope nope"},
    )
    assert wrong.status_code == 401 and "name or password is wrong" in wrong.text
    tokenless = desk.api.post("/console/sign-in", data={"name": "ada", "password": PASSWORD})
    assert tokenless.status_code == 403


def test_every_page_answers_for_a_signed_in_operator(desk: Desk) -> None:
    cus_id = desk.customer("acme")
    desk.subscribe(cus_id, status="past_due")
    desk.charge(cus_id, 2900, created=desk.clock.now())
    _sign_in(desk, "ada", "admin")
    events = desk.get("/v1/events")["data"]
    for path in (
        "/console",
        "/console/customers",
        "/console/customers?status=past_due&q=acme",
        "/console/customers/acme",
        "/console/webhooks",
        "/console/webhooks?status=failed&type=customer.*",
        f"/console/webhooks/{events[0]['id']}",
        "/console/outbox",
        "/console/reconciliation",
        "/console/catalog",
        "/console/api-keys",
        "/console/fees",
    ):
        answer = desk.api.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "Content-Security-Policy" in answer.headers
    assert "acme" in desk.api.get("/console/customers?status=past_due").text


def test_events_tollgate_built_are_marked_on_the_webhooks_page(desk: Desk) -> None:
    from tests.console.conftest import customer_obj, event_obj
    from tollgate.services.webhooks import apply_built_events

    desk.customer("acme")
    built = event_obj("customer.created", customer_obj("cus_built", app_id="globex"))
    built["id"] = "reconcile:1:cus_built"
    [result] = apply_built_events(
        db=desk.db,
        gateway=None,
        events=[built],
        clock=desk.clock,
        dunning=desk.container.dunning_policy,
    )
    assert result.outcome == "succeeded", result
    _sign_in(desk, "ada", "admin")
    page = desk.api.get("/console/webhooks").text
    assert page.count("built by Tollgate") == 1
    assert "reconcile:1:cus_built · built by Tollgate" in page


def test_each_overview_count_links_to_a_list_of_that_many_customers(desk: Desk) -> None:
    from tests.console.conftest import NOW, event_obj
    from tests.integration.test_webhooks import subscription_obj

    week = int(NOW.timestamp()) + 86_400
    for org, status, extra in (
        ("paid-1", "active", {}),
        ("paid-2", "active", {}),
        ("late-1", "past_due", {}),
        ("leaving-1", "active", {"cancel_at_period_end": True}),
        ("trial-soon", "trialing", {"trial_end": week}),
        ("trial-later", "trialing", {"trial_end": week + 30 * 86_400}),
        ("unpaid-1", "unpaid", {}),
    ):
        desk.subscribe(desk.customer(org), status=status, **extra)
    gone = subscription_obj("sub_gone", desk.customer("gone-1"), status="canceled")
    gone["canceled_at"] = gone["ended_at"] = int(NOW.timestamp()) - 3600
    desk.deliver(event_obj("customer.subscription.created", gone))
    made = desk.call(
        "POST",
        "/v1/customers",
        json={"id": "offline-1", "email": "o@x.example", "offline": True, "plan": "pro"},
    )
    assert made.status_code == 201
    _sign_in(desk, "ada", "admin")
    overview = desk.api.get("/console").text
    figures = re.findall(
        r'<a href="(/console/customers\?[^"]+)"><span class="label">([^<]+)</span> '
        r'<span class="value">([\d,]+)</span>',
        overview,
    )
    labels = {label for _, label, _ in figures}
    assert {"active", "past due", "trialing", "canceling", "unpaid"} <= labels
    assert {"Trials ending this week", "New this month", "Churned this month"} <= labels
    for href, label, value in figures:
        listed = desk.api.get(href.replace("&amp;", "&")).text
        rows = re.findall(r'<tr>\s*<td><a href="/console/customers/([^"]+)"', listed)
        assert len(rows) == int(value.replace(",", "")), (label, href, rows)
    assert re.findall(
        r'<tr>\s*<td><a href="/console/customers/([^"]+)"',
        _list(desk, overview, "Trials ending this week"),
    ) == ["trial-soon"]
    assert "gone-1" in _list(desk, overview, "Churned this month")
    # The MRR table's "paying" count per plan leads to the customers paying it.
    paying = re.search(
        r'<a href="(/console/customers\?status=paying[^"]+)">pro</a>.*?'
        r'<td class="num">(\d+)</td>',
        overview,
        re.S,
    )
    assert paying, overview
    listed = desk.api.get(paying.group(1).replace("&amp;", "&")).text
    rows = re.findall(r'<tr>\s*<td><a href="/console/customers/([^"]+)"', listed)
    assert sorted(rows) == ["late-1", "leaving-1", "paid-1", "paid-2"] and paying.group(2) == "4"


def test_the_overview_shows_the_last_30_days_payment_fees_as_the_fees_page_does(
    desk: Desk,
) -> None:
    card, bank = desk.customer("card-co"), desk.customer("bank-co")
    desk.charge(card, 100_000)  # 31 days ago: before the window
    desk.clock.advance(timedelta(days=31))
    desk.charge(card, 100_000)  # 2.9 % + 30¢ = $29.30
    desk.charge(card, 100_000)
    desk.charge(bank, 100_000, method="us_bank_account")  # 0.8 % capped at $5
    desk.charge(card, 100_000, status="failed")  # no fee
    _sign_in(desk, "ada", "admin")
    overview = desk.api.get("/console").text
    figure = re.search(
        r'<span class="label">Payment fees, last 30 days</span> <span class="value">([^<]+)</span>',
        overview,
    )
    assert figure and figure.group(1) == "$63.60", overview
    assert "$63.60" in desk.api.get("/console/fees").text


def _list(desk: Desk, overview: str, label: str) -> str:
    href = re.search(rf'<a href="([^"]+)"><span class="label">{label}</span>', overview)
    assert href, label
    return desk.api.get(href.group(1).replace("&amp;", "&")).text


def test_grant_credits_is_audited_under_the_operator(desk: Desk) -> None:
    desk.customer("acme")
    _sign_in(desk, "sam", "support")
    page = desk.api.get("/console/customers/acme")
    answer = desk.api.post(
        "/console/customers/acme/actions/grant-credits",
        data={"csrf_token": _csrf(page.text), "amount": "250", "reason": "outage", "key": "k1"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    shown = desk.api.get(answer.headers["location"]).text
    assert "The credits were granted." in shown and "+250" in shown
    with desk.db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(AUDIT_LOG.c.actor, AUDIT_LOG.c.action).where(
                AUDIT_LOG.c.object_id == "acme", AUDIT_LOG.c.actor.like("operator:%")
            )
        ).all()
    assert [tuple(row) for row in rows] == [("operator:sam", "grant_credits")]


@pytest.mark.parametrize(
    "path", ["/console/customers/acme/actions/grant-credits", "/console/api-keys"]
)
def test_readonly_cannot_act(desk: Desk, path: str) -> None:
    desk.customer("acme")
    _sign_in(desk, "rita", "readonly")
    page = desk.api.get("/console/customers/acme")
    assert "can look but not act" in page.text
    answer = desk.api.post(
        path, data={"csrf_token": _csrf(page.text), "amount": "5", "name": "x", "scope": "read"}
    )
    assert answer.status_code == 403 and "may not" in answer.text


def test_support_cannot_administer_keys(desk: Desk) -> None:
    _sign_in(desk, "sam", "support")
    page = desk.api.get("/console/api-keys")
    answer = desk.api.post(
        "/console/api-keys", data={"csrf_token": _csrf(page.text), "name": "x", "scope": "read"}
    )
    assert answer.status_code == 403


def test_an_action_without_its_csrf_token_is_refused(desk: Desk) -> None:
    desk.customer("acme")
    _sign_in(desk, "ada", "admin")
    answer = desk.api.post(
        "/console/customers/acme/actions/grant-credits", data={"amount": "5", "key": "k"}
    )
    assert answer.status_code == 403
    other_site = desk.api.post(
        "/console/customers/acme/actions/grant-credits",
        data={"amount": "5", "key": "k", "csrf_token": _csrf(desk.api.get("/console").text)},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert desk.get("/v1/customers/acme/credits")["balance"] == 0


def test_sign_out_everywhere_ends_every_session(desk: Desk) -> None:
    _sign_in(desk, "ada", "admin")
    page = desk.api.get("/console")
    answer = desk.api.post(
        "/console/sign-out",
        data={"csrf_token": _csrf(page.text), "everywhere": "1"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert desk.api.get("/console", follow_redirects=False).status_code == 303


def test_the_session_cookie_is_secure_behind_https(desk: Desk) -> None:
    create_operator(db=desk.db, clock=desk.clock, name="ada", role="admin", password=PASSWORD)
    https = {"X-Forwarded-Proto": "https"}
    form = desk.api.get("/console/sign-in", headers=https)
    assert "Secure" in form.headers["set-cookie"]
    # The test client speaks plain http, so it keeps a Secure cookie back: hand it over.
    desk.api.cookies.set("tg_console_pre", form.cookies["tg_console_pre"])
    answer = desk.api.post(
        "/console/sign-in",
        data={"csrf_token": _csrf(form.text), "name": "ada", "password": PASSWORD},
        headers=https,
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert "Secure" in answer.headers["set-cookie"]


def _post(desk: Desk, path: str, page: str, **data: str):  # type: ignore[no-untyped-def]
    return desk.api.post(path, data={"csrf_token": _csrf(page), **data}, follow_redirects=False)


def test_support_changes_an_offline_plan_resends_an_email_and_marks_online(desk: Desk) -> None:
    from tollgate.services.outbox import queue_email

    made = desk.call(
        "POST",
        "/v1/customers",
        json={"id": "off-co", "email": "o@off.example", "offline": True, "plan": "pro"},
    )
    assert made.status_code == 201, made.text
    with desk.db.engine.begin() as connection:
        queue_email(
            connection,
            customer_id="off-co",
            template="trial_started",
            cause="t",
            facts={},
            now=desk.clock.now(),
        )
        connection.execute(sa.text("UPDATE notifications SET status = 'sent', attempts = 1"))
    _sign_in(desk, "sam", "support")
    page = desk.api.get("/console/customers/off-co").text
    changed = _post(
        desk, "/console/customers/off-co/actions/change-plan", page, plan="team", interval="month"
    )
    assert changed.status_code == 303, changed.text
    assert desk.get("/v1/customers/off-co")["plan"] == "team"
    email_id = desk.get("/v1/outbox", customer="off-co")["data"][0]["id"].removeprefix("email_")
    preview = desk.api.get(f"/console/outbox/email_{email_id}")
    assert preview.status_code == 200 and "o@off.example" in preview.text
    resent = _post(desk, "/console/customers/off-co/actions/resend-email", page, email=email_id)
    assert resent.status_code == 303
    assert desk.get("/v1/outbox", customer="off-co")["data"][0]["status"] == "pending"
    online = _post(desk, "/console/customers/off-co/actions/mark-online", page)
    assert online.status_code == 400 and "no Stripe customer" in online.text
    with desk.db.engine.connect() as connection:
        actions = (
            connection.execute(
                sa.select(AUDIT_LOG.c.action).where(AUDIT_LOG.c.actor == "operator:sam")
            )
            .scalars()
            .all()
        )
    assert sorted(actions) == ["change_plan", "resend_email"]


def test_an_admin_reconciles_and_heals_from_the_page(desk: Desk) -> None:
    _sign_in(desk, "ada", "admin")
    page = desk.api.get("/console/reconciliation").text
    ran = _post(desk, "/console/reconciliation/run", page)
    assert ran.status_code == 303, ran.text
    report = desk.api.get(ran.headers["location"])
    assert report.status_code == 200 and "Reconciliation #" in report.text
    assert "what Stripe is the record for was healed" in report.text
    newest = desk.get("/v1/reconciliations")["data"][0]
    assert newest["trigger"] == "console"
    now = desk.clock.now()
    assert newest["window"]["start"] == (now - timedelta(hours=24)).isoformat()


@pytest.mark.parametrize(
    ("form", "days_back"),
    [({"window": "7d"}, 7), ({"window": "30d"}, 30), ({"window": "date"}, None)],
)
def test_heal_from_the_page_takes_the_window_the_cli_takes(
    desk: Desk, form: dict[str, str], days_back: int | None
) -> None:
    _sign_in(desk, "ada", "admin")
    page = desk.api.get("/console/reconciliation").text
    assert 'name="window" value="30d"' in page and 'type="date"' in page
    now = desk.clock.now()
    start = (now - timedelta(days=12)).replace(hour=0, minute=0, second=0, microsecond=0)
    if days_back is None:
        form = {**form, "since_date": start.date().isoformat()}
    ran = _post(desk, "/console/reconciliation/run", page, **form)
    assert ran.status_code == 303, ran.text
    window = desk.get("/v1/reconciliations")["data"][0]["window"]
    expected = now - timedelta(days=days_back) if days_back else start
    assert window["start"] == expected.isoformat()


@pytest.mark.parametrize(
    "form",
    [
        {"window": "1y"},
        {"window": "date"},
        {"window": "date", "since_date": "not a date"},
        {"window": "date", "since_date": "2999-01-01"},
    ],
)
def test_a_bad_window_is_refused_and_runs_nothing(desk: Desk, form: dict[str, str]) -> None:
    _sign_in(desk, "ada", "admin")
    page = desk.api.get("/console/reconciliation").text
    refused = _post(desk, "/console/reconciliation/run", page, **form)
    assert refused.status_code == 400 and "window" in refused.text.lower()
    assert desk.get("/v1/reconciliations")["data"] == []
