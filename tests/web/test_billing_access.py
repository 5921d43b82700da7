"""Who may see a customer's pages: signed links, page sessions, CSRF on every form."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from tollgate.clock import AdjustableClock
from tollgate.db.models import AuditLog


def _customer(client: Any, key: dict[str, str], customer_id: str) -> None:
    body = {"id": customer_id, "email": f"billing@{customer_id}.example", "name": customer_id}
    assert client.post("/v1/customers", json=body, headers=key).status_code == 201


def _link(client: Any, key: dict[str, str], customer_id: str) -> str:
    answer = client.post(f"/v1/customers/{customer_id}/billing-session", headers=key)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["url"])


def test_a_billing_link_opens_that_customers_page_and_no_other(pages: Callable[..., Any]) -> None:
    container, client, key = pages()
    _customer(client, key, "org_a")
    _customer(client, key, "org_b")
    url = _link(client, key, "org_a")
    assert url.startswith("http://testserver/billing/session/")
    opened = client.get(url, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/billing"
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    page = client.get("/billing")
    assert page.status_code == 200
    assert "org_a" in page.text and "org_b" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    with container.db.transaction() as session:
        actions = session.scalars(sa.select(AuditLog.action).where(AuditLog.object_id == "org_a"))
        assert "billing_link" in list(actions)


def test_forged_and_expired_links_see_a_clear_page_and_no_data(pages: Callable[..., Any]) -> None:
    clock = AdjustableClock()
    container, client, key = pages()
    container.clock = clock
    _customer(client, key, "org_a")
    url = _link(client, key, "org_a")
    body, _, mac = url.rpartition("/")[2].partition(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    forged = client.get(f"/billing/session/{forged_body}.{mac}", follow_redirects=False)
    assert forged.status_code == 403
    assert "not valid" in forged.text and "org_a" not in forged.text
    clock.move_to(clock.now() + timedelta(minutes=16))
    expired = client.get(url, follow_redirects=False)
    assert expired.status_code == 401 and "expired" in expired.text
    assert "set-cookie" not in expired.headers or 'tollgate_billing=""' in expired.headers.get(
        "set-cookie", ""
    )
    nobody = client.get("/billing")
    assert nobody.status_code == 401 and "org_a" not in nobody.text


def test_a_form_without_its_csrf_token_changes_nothing(pages: Callable[..., Any]) -> None:
    _, client, key = pages()
    _customer(client, key, "org_a")
    client.get(_link(client, key, "org_a"))
    page = client.get("/billing").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    refused = client.post("/billing/preview", data={"plan": "pro", "interval": "month"})
    assert refused.status_code == 403
    other_site = client.post(
        "/billing/preview",
        data={"plan": "pro", "interval": "month", "csrf_token": token.group(1)},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    shown = client.post(
        "/billing/preview", data={"plan": "pro", "interval": "month", "csrf_token": token.group(1)}
    )
    assert shown.status_code == 200, shown.text
    assert "Continue to checkout" in shown.text and "14-day free trial" in shown.text
