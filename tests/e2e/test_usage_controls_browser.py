"""The spend cap and usage alerts on the pages, in a real headless Chromium at 1280 and 375 px:
the customer sets its own on the billing page where the catalog allows (and only there), an
operator with the support role sets them on the console's customer page, a readonly operator
and a form without its CSRF token are refused, bad input changes nothing, and every change
leaves an audit row naming who made it. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.console.test_console_browser import (
    CHROMIUM,
    PASSWORD,
    SHOTS,
    _no_horizontal_scroll,
    _sign_in,
    browser,
    page,
)
from tests.e2e.conftest import serve
from tollgate.api import operations
from tollgate.api.schemas import AlertCreate
from tollgate.bootstrap import Container, build_container
from tollgate.catalog_file import load_catalog_file
from tollgate.client.local import LocalTollgate
from tollgate.config import Settings
from tollgate.db.models import AuditLog
from tollgate.db.unit_of_work import Database
from tollgate.services.operators import create_operator

__all__ = ["browser", "page"]

EXAMPLE_CATALOG = Path(__file__).parents[2] / "catalog.example.yaml"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


@dataclass
class Site:
    url: str
    container: Container

    def billing_link(self, customer_id: str) -> str:
        return operations.open_billing_session(self.container, customer_id, base_url=self.url)[
            "url"
        ]

    def audit(self, action: str) -> list[tuple[str, Any]]:
        with self.container.db.transaction() as session:
            rows = session.execute(
                sa.select(AuditLog.actor, AuditLog.after)
                .where(AuditLog.action == action)
                .order_by(AuditLog.id)
            ).all()
        return [(row.actor, row.after) for row in rows]

    def alerts(self, customer_id: str) -> list[Any]:
        return operations.list_alerts(self.container, customer_id)


def _catalog(tmp_path: Path, *, customer_caps: bool) -> Any:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["customer_spend_caps"] = customer_caps
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return load_catalog_file(path)


@pytest.fixture
def make_site(
    db: Database, tmp_path: Path, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Site]]:
    """Tollgate serving its pages, with offline Pro customers acme and globex and operators."""
    running: list[Any] = []

    def make(*, customer_caps: bool = True) -> Site:
        container = build_container(
            make_settings(db.url, STRIPE_SECRET_KEY=""),
            catalog_override=_catalog(tmp_path, customer_caps=customer_caps),
        )
        tollgate = LocalTollgate(container)
        for customer in ("acme", "globex"):
            tollgate.create_customer(
                customer, email=f"billing@{customer}.example", offline=True, plan="pro"
            )
        for name, role in (("sam", "support"), ("rita", "readonly")):
            create_operator(
                db=container.db, clock=container.clock, name=name, role=role, password=PASSWORD
            )
        served = serve(container)
        url = served.__enter__()
        running.append((served, container))
        return Site(url, container)

    yield make
    for served, container in running:
        served.__exit__(None, None, None)
        container.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"usage-controls-{name}.png"), full_page=True)


def _controls(page: Any) -> Any:
    return page.locator("#usage-controls")


@pytest.mark.parametrize("width", [1280, 375])
def test_a_customer_sets_its_spend_cap_and_alerts_on_the_billing_page(
    make_site: Callable[..., Site], page: Any, width: int
) -> None:
    site = make_site()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(site.billing_link("acme"))
    controls = _controls(page)
    assert page.get_by_role("heading", name="Spend cap and usage alerts").is_visible()
    assert "No spend cap" in controls.inner_text() and "No alerts yet." in controls.inner_text()

    page.get_by_label("Most overage may cost a period (USD)").fill("12.50")
    page.get_by_role("button", name="Save spend cap").click()
    page.wait_for_url("**/billing?done=spend-cap*")
    assert page.locator("#notice").inner_text() == "Your spend cap was saved."
    assert "Overage is capped at $12.50 a billing period" in page.locator("#spend-cap").inner_text()
    assert page.get_by_label("Most overage may cost a period (USD)").input_value() == "12.50"

    page.get_by_label("Feature").select_option(label="Workflow runs")
    page.get_by_label("Alert when").select_option("percent")
    page.get_by_label("At", exact=True).fill("80")
    page.get_by_role("button", name="Add alert").click()
    page.wait_for_url("**/billing?done=add-alert*")
    listed = page.locator("#alerts li")
    assert listed.count() == 1
    assert "Workflow runs: 80 % of what the plan includes" in listed.first.inner_text()
    _no_horizontal_scroll(page, width)
    _shot(page, f"billing-{width}")

    # Bad input: a clear error, and nothing changes.
    page.get_by_label("Alert when").select_option("units")
    page.get_by_label("At", exact=True).fill("lots")
    page.get_by_role("button", name="Add alert").click()
    assert page.get_by_role("heading", name="That did not work").is_visible()
    assert "whole number" in page.locator("main").inner_text()
    page.goto(f"{site.url}/billing")
    page.get_by_label("Most overage may cost a period (USD)").fill("-5")
    page.get_by_role("button", name="Save spend cap").click()
    assert page.get_by_role("heading", name="That did not work").is_visible()
    assert len(site.alerts("acme")) == 1
    assert operations.get_spend_cap(site.container, "acme").amount == 1250

    page.goto(f"{site.url}/billing")
    page.get_by_role("button", name="Remove the alert on Workflow runs at 80 %").click()
    page.wait_for_url("**/billing?done=remove-alert*")
    assert "No alerts yet." in _controls(page).inner_text()
    page.get_by_label("Most overage may cost a period (USD)").fill("")
    page.get_by_role("button", name="Save spend cap").click()
    page.wait_for_url("**/billing?done=spend-cap*")
    assert "No spend cap" in page.locator("#spend-cap").inner_text()

    assert site.audit("set_spend_cap") == [
        ("customer:acme", {"amount_minor": 1250, "via": "billing_page"}),
        ("customer:acme", {"amount_minor": None, "via": "billing_page"}),
    ]
    assert [actor for actor, _ in site.audit("add_usage_alert")] == ["customer:acme"]
    assert [actor for actor, _ in site.audit("remove_usage_alert")] == ["customer:acme"]
    # The page's session is acme's: globex's alerts are out of its reach.
    globex = operations.create_alert(
        site.container,
        "globex",
        AlertCreate(feature="runs", kind="units", threshold=10),
    )
    token = page.locator("#usage-controls input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{site.url}/billing/usage-controls/remove-alert",
        form={"csrf_token": token, "alert": globex.id},
    )
    assert answer.status == 404 and len(site.alerts("globex")) == 1


def test_the_billing_page_offers_no_cap_where_the_catalog_does_not_allow_it(
    make_site: Callable[..., Site], page: Any
) -> None:
    site = make_site(customer_caps=False)
    page.goto(site.billing_link("acme"))
    assert page.locator("#cap-contact").is_visible()
    assert page.locator("form[action$='/spend-cap']").count() == 0
    token = page.locator("#usage-controls input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{site.url}/billing/usage-controls/spend-cap", form={"csrf_token": token, "amount": "5"}
    )
    assert answer.status == 403 and "customer_spend_caps" in answer.text()
    assert operations.get_spend_cap(site.container, "acme").amount is None
    # Alerts stay the customer's to set; a form without its CSRF token is refused.
    answer = page.request.post(
        f"{site.url}/billing/usage-controls/add-alert",
        form={"feature": "runs", "kind": "percent", "threshold": "50"},
    )
    assert answer.status == 403 and site.alerts("acme") == []


@pytest.mark.parametrize("width", [1280, 375])
def test_support_sets_the_cap_and_alerts_on_the_console_and_is_named_in_the_audit_log(
    make_site: Callable[..., Site], page: Any, width: int
) -> None:
    site = make_site(customer_caps=False)
    page.set_viewport_size({"width": width, "height": 900})
    _sign_in(page, site.url, "sam")
    page.goto(f"{site.url}/console/customers/acme")
    assert page.get_by_role("heading", name="Spend cap and usage alerts").is_visible()
    assert page.locator("#spend-cap").inner_text() == "none"

    controls = page.get_by_role("region", name="Spend cap and usage alerts")
    controls.get_by_text("Set the spend cap", exact=True).click()
    controls.get_by_label("Most overage may cost a period (USD)").fill("40")
    controls.get_by_role("button", name="Save spend cap").click()
    page.wait_for_url("**/console/customers/acme?done=spend-cap*")
    assert "$40.00 of overage a period" in page.locator("#spend-cap").inner_text()
    assert "operator:sam" in page.locator("#spend-cap").inner_text()

    controls = page.get_by_role("region", name="Spend cap and usage alerts")
    controls.get_by_text("Add a usage alert", exact=True).click()
    controls.get_by_label("Feature").select_option(label="Workflow runs")
    controls.get_by_label("Kind").select_option("money")
    controls.get_by_label("At", exact=True).fill("25.00")
    controls.get_by_role("button", name="Add alert").click()
    page.wait_for_url("**/console/customers/acme?done=add-alert*")
    row = page.locator("#alerts tbody tr")
    assert row.count() == 1 and "$25.00 of overage" in row.first.inner_text()
    _no_horizontal_scroll(page, width)
    _shot(page, f"console-{width}")

    page.get_by_role(
        "button", name="Remove the alert on Workflow runs at $25.00 of overage"
    ).click()
    page.wait_for_url("**/console/customers/acme?done=remove-alert*")
    assert "No alerts." in page.locator("#alerts").inner_text()
    assert site.audit("set_spend_cap") == [("operator:sam", {"amount_minor": 4000})]
    assert [actor for actor, _ in site.audit("add_usage_alert")] == ["operator:sam"]
    assert [actor for actor, _ in site.audit("remove_usage_alert")] == ["operator:sam"]
    # A form without its CSRF token is refused and changes nothing.
    answer = page.request.post(
        f"{site.url}/console/customers/acme/usage-controls/spend-cap", form={"amount": "1"}
    )
    assert answer.status == 403
    assert operations.get_spend_cap(site.container, "acme").amount == 4000


def test_a_readonly_operator_sees_the_controls_but_cannot_change_them(
    make_site: Callable[..., Site], page: Any
) -> None:
    site = make_site()
    _sign_in(page, site.url, "rita")
    page.goto(f"{site.url}/console/customers/acme")
    assert page.get_by_role("heading", name="Spend cap and usage alerts").is_visible()
    assert page.get_by_text("Set the spend cap", exact=True).count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{site.url}/console/customers/acme/usage-controls/spend-cap",
        form={"csrf_token": token, "amount": "5"},
    )
    assert answer.status == 403
    assert operations.get_spend_cap(site.container, "acme").amount is None
    assert site.audit("set_spend_cap") == []
