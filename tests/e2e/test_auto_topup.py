"""Auto top-up against stripesim: credits falling below N buy pack P off-session once per
crossing, even under concurrent burns; a card that needs its holder fails with
authentication_required, emails the customer and is not retried."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.e2e.conftest import World
from tollgate.db.models import Notification, TopupAttempt
from tollgate.jobs.usage_controls import run_auto_topups

EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "catalog.example.yaml"


def topup_catalog(tmp_path: Path) -> str:
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    catalog["features"]["cpu_seconds"]["credits_per_unit"] = 1
    catalog["plans"]["free"]["features"]["cpu_seconds"] = {"included": 1_000_000}
    catalog["credit_packs"] = {
        "starter": {
            "name": "Starter credits",
            "credits": 1000,
            "prices": [{"currency": "usd", "amount": "10.00"}],
        }
    }
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return str(path)


def customer_with_card(world: World, customer_id: str, card: str) -> str:
    world.create_customer(customer_id)
    cus = world.customer(customer_id)["stripe_customer_id"]
    method = world.stripe.v1.payment_methods.attach(card, params={"customer": cus})
    world.stripe.v1.customers.update(
        cus, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.call(
        "PUT", f"/v1/customers/{customer_id}/auto-topup", json={"below": 1000, "pack": "starter"}
    )
    return cus


def burn(world: World, customer_id: str, prefix: str, n: int, value: int = 10) -> None:
    def post(i: int) -> None:
        event = {
            "id": f"{prefix}-{i}",
            "customer": customer_id,
            "meter": "cpu_seconds",
            "value": value,
        }
        world.call("POST", "/v1/usage", json={"events": [event]})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(post, range(n)))


def attempts(world: World, customer_id: str) -> list[TopupAttempt]:
    with world.db.transaction() as session:
        return list(
            session.scalars(sa.select(TopupAttempt).where(TopupAttempt.customer_id == customer_id))
        )


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_burns_buy_one_pack_and_a_refused_card_is_not_retried(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG=topup_catalog(tmp_path), TOLLGATE_ONBOARD_CREDITS=1200)
    cus = customer_with_card(world, "acme", "pm_card_visa")
    burn(world, "acme", "a", 40)  # 1,200 -> 800: one crossing of 1,000, by 40 concurrent burns
    assert [a.status for a in attempts(world, "acme")] == ["pending"]
    report = run_auto_topups(world.container)
    assert (report.succeeded, report.failed) == (1, 0)
    assert run_auto_topups(world.container).succeeded == 0  # once
    assert world.call("GET", "/v1/customers/acme/credits")["balance"] == 1800
    intents = world.stripe.v1.payment_intents.list(params={"customer": cus}).data
    assert [(pi.amount, pi.status) for pi in intents] == [(1000, "succeeded")]
    burn(world, "acme", "b", 60)  # 1,800 -> 1,200: above 1,000, no crossing
    assert len(attempts(world, "acme")) == 1
    burn(world, "acme", "c", 30)  # 1,200 -> 900: a new crossing
    assert run_auto_topups(world.container).succeeded == 1
    assert world.call("GET", "/v1/customers/acme/credits")["balance"] == 1900

    customer_with_card(world, "needs-3ds", "pm_card_authenticationRequired")
    burn(world, "needs-3ds", "d", 25)  # 1,200 -> 950
    failed = run_auto_topups(world.container)
    assert (failed.succeeded, failed.failed) == (0, 1)
    [attempt] = attempts(world, "needs-3ds")
    assert attempt.status == "failed" and "authentication_required" in (attempt.error or "")
    burn(world, "needs-3ds", "e", 10)  # further below: no new crossing, no retry
    assert run_auto_topups(world.container).failed == 0
    assert len(attempts(world, "needs-3ds")) == 1
    with world.db.transaction() as session:
        mails = session.scalars(
            sa.select(Notification).where(Notification.template == "auto_topup_failed")
        ).all()
    assert [mail.customer_id for mail in mails] == ["needs-3ds"]
    assert world.call("GET", "/v1/customers/needs-3ds/credits")["balance"] == 850
