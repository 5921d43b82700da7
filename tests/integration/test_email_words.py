"""What the usage emails say: true, formatted for the reader, with what to do next."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.integration.test_usage_and_entitlements import (  # noqa: F401  (a fixture)
    make_api,
    offline_customer,
    post_usage,
    runs,
)
from tollgate.bootstrap import Container
from tollgate.cli import app as cli
from tollgate.services.outbox import RenderedEmail, preview_email


def _mail(container: Container, customer: str, template: str) -> RenderedEmail:
    mail = preview_email(container, template=template, customer_id=customer)
    assert not mail.sample  # rendered from the mail queued for this customer
    return mail


def test_a_hard_limit_mail_says_use_is_blocked_and_which_plan_has_room(
    make_api: Callable[..., tuple[TestClient, Container]],  # noqa: F811
) -> None:
    api, container = make_api()
    offline_customer(api, "acme")  # Free: 1,000 runs, a hard limit
    post_usage(api, runs("acme", range(800)))
    warning = _mail(container, "acme", "usage_warning")
    assert warning.subject == "You have used 80% of your Workflow runs"
    assert "You have used 800 of the 1,000 runs included in your Free plan" in warning.text
    assert "Once you reach 1,000, new runs are blocked until then. Pro has room for more." in (
        warning.text
    )
    post_usage(api, runs("acme", range(800, 1000)))
    exceeded = _mail(container, "acme", "usage_exceeded")
    assert exceeded.subject == "You have reached your Workflow runs limit"
    assert "You have used all 1,000 runs included in your Free plan this period" in exceeded.text
    assert "new runs are blocked until it renews on" in exceeded.text
    assert "Upgrade to Pro to keep going now." in exceeded.text
    assert "more than" not in exceeded.text
    assert "<strong>blocked</strong>" in exceeded.html


def test_a_soft_limit_mail_gives_the_overage_rate_and_what_it_comes_to(
    make_api: Callable[..., tuple[TestClient, Container]],  # noqa: F811
) -> None:
    api, container = make_api()
    offline_customer(api, "acme", plan="pro")  # 100,000 runs, then $0.50 per 1,000
    post_usage(api, runs("acme", range(11), value=10_000))
    exceeded = _mail(container, "acme", "usage_exceeded")
    assert exceeded.subject == "You have used all the Workflow runs in your plan"
    assert "You have used 110,000 runs, more than the 100,000 included in your Pro plan" in (
        exceeded.text
    )
    assert "Further runs are billed at $0.50 per 1,000 runs: at this pace, about $" in (
        exceeded.text
    )
    assert "blocked" not in exceeded.text


def test_numbers_money_and_dates_are_written_for_the_customers_locale(
    make_api: Callable[..., tuple[TestClient, Container]],  # noqa: F811
) -> None:
    api, container = make_api()
    created = api.post(
        "/v1/customers",
        json={
            "id": "gmbh",
            "email": "b@gmbh.example",
            "offline": True,
            "metadata": {"locale": "de"},
        },
    )
    assert created.status_code == 201, created.text
    post_usage(api, runs("gmbh", range(800)))
    warning = _mail(container, "gmbh", "usage_warning")
    assert "You have used 800 of the 1.000 runs" in warning.text


def test_emails_preview_renders_a_template_to_the_terminal_or_a_file(
    make_api: Callable[..., tuple[TestClient, Container]],  # noqa: F811
    tmp_path: Any,
    monkeypatch: Any,
) -> None:
    api, container = make_api()
    offline_customer(api, "acme")
    post_usage(api, runs("acme", range(1000)))
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", container.db.url)
    monkeypatch.setenv("TOLLGATE_CATALOG", str(container.settings.catalog_path))
    runner = CliRunner()
    sample = runner.invoke(cli, ["emails", "preview", "trial_ending"])
    assert sample.exit_code == 0, sample.output
    assert "Subject: Your Pro trial ends on" in sample.output
    assert "(sample facts from the catalog)" in sample.output
    own = runner.invoke(cli, ["emails", "preview", "usage_exceeded", "--customer", "acme"])
    assert own.exit_code == 0, own.output
    assert "To: b@acme.example" in own.output and "(its newest mail)" in own.output
    page = tmp_path / "mail.html"
    written = runner.invoke(cli, ["emails", "preview", "usage_warning", "--out", str(page)])
    assert written.exit_code == 0, written.output
    assert "<p>" in page.read_text()
    unknown = runner.invoke(cli, ["emails", "preview", "nope"])
    assert unknown.exit_code == 2
    assert "unknown email template 'nope'" in unknown.output
