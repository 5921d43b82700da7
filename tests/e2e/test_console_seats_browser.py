"""Support changes a per-seat subscription's seats from the console's customer page, in a real
headless Chromium at 1280 and 375 px, with stripesim as Stripe: the change reaches Stripe and
the mirror, is audited under the operator's name, a count outside the plan's bounds is refused
with the reason and changes nothing, and a readonly operator gets no form and is refused.
On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.console.test_console_browser import (
    CHROMIUM,
    PASSWORD,
    SHOTS,
    _no_horizontal_scroll,
    _sign_in,
    browser,
    page,
)
from tests.e2e.conftest import World
from tests.e2e.test_billing_lifecycle import T0, paying_customer, stripe_subscription
from tollgate.db.tables import AUDIT_LOG
from tollgate.services.operators import create_operator

__all__ = ["browser", "page"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"),
]


def _operators(world: World) -> None:
    for name, role in (("sam", "support"), ("rita", "readonly")):
        create_operator(
            db=world.db, clock=world.container.clock, name=name, role=role, password=PASSWORD
        )


def _licensed_quantity(world: World, customer_id: str) -> list[int]:
    items = stripe_subscription(world, customer_id)["items"].data
    return [i.quantity for i in items if i.price.recurring.usage_type == "licensed"]


def _audited(world: World) -> list[tuple[str, Any]]:
    with world.db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(AUDIT_LOG.c.actor, AUDIT_LOG.c.after)
            .where(AUDIT_LOG.c.action == "change_seats")
            .order_by(AUDIT_LOG.c.id)
        ).all()
    return [(row.actor, row.after) for row in rows]


@pytest.mark.parametrize("width", [1280, 375])
def test_support_changes_the_seats_from_the_customer_page(
    world: World, page: Any, width: int
) -> None:
    _operators(world)
    paying_customer(world, "team-org", world.test_clock(T0), plan="team", seats=3)
    page.set_viewport_size({"width": width, "height": 900})
    _sign_in(page, world.base_url, "sam")
    page.goto(f"{world.base_url}/console/customers/team-org")
    assert "team · per month · 3 seats" in page.locator(".facts").first.inner_text()

    page.get_by_text("Change seats", exact=True).click()
    seats = page.get_by_label("Seats")
    assert seats.input_value() == "3"
    assert (seats.get_attribute("min"), seats.get_attribute("max")) == ("2", "200")
    seats.fill("5")
    page.get_by_role("button", name="Confirm seat change").click()
    page.wait_for_url("**/console/customers/team-org?done=seats*")
    assert "The seat count was changed." in page.locator("main").inner_text()
    world.settle()
    assert _licensed_quantity(world, "team-org") == [5]
    assert world.subscription("team-org")["seats"] == 5
    page.reload()
    assert "5 seats" in page.locator(".facts").first.inner_text()
    _no_horizontal_scroll(page, width)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_text("Change seats", exact=True).click()
    actions = page.locator("section[aria-labelledby=actions-title]")
    actions.screenshot(path=str(SHOTS / f"console-seats-{width}.png"))

    # Below the plan's minimum (the browser's own check taken off, as a script would send it):
    # the reason is shown, and neither Stripe nor the mirror changes.
    page.evaluate("document.getElementById('seats').removeAttribute('min')")
    page.get_by_label("Seats").fill("1")
    page.get_by_role("button", name="Confirm seat change").click()
    page.wait_for_load_state()
    assert "seats" in page.locator("main").inner_text().lower()
    assert "?done=" not in page.url
    world.settle()
    assert _licensed_quantity(world, "team-org") == [5]
    assert world.subscription("team-org")["seats"] == 5
    assert _audited(world) == [("operator:sam", {"seats": 5, "was": 3})]


def test_a_readonly_operator_cannot_change_seats(world: World, page: Any) -> None:
    _operators(world)
    paying_customer(world, "team-org", world.test_clock(T0), plan="team", seats=3)
    _sign_in(page, world.base_url, "rita")
    page.goto(f"{world.base_url}/console/customers/team-org")
    assert page.get_by_text("Change seats", exact=True).count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{world.base_url}/console/customers/team-org/actions/change-seats",
        form={"csrf_token": token, "seats": "9"},
    )
    assert answer.status == 403
    assert _licensed_quantity(world, "team-org") == [3]
    assert _audited(world) == []
    # A change waiting for the period end is shown with the subscription's facts.
    moved = world.put_subscription("team-org", plan="pro", interval="month")
    assert moved["pending_change"]["plan"] == "pro", moved
    page.reload()
    assert "Changes\nto pro · per month on " in page.locator(".facts").first.inner_text()


def test_a_plan_not_priced_per_seat_offers_no_seat_change(world: World, page: Any) -> None:
    _operators(world)
    paying_customer(world, "solo-org", world.test_clock(T0), plan="pro")
    _sign_in(page, world.base_url, "sam")
    page.goto(f"{world.base_url}/console/customers/solo-org")
    assert page.get_by_text("Change plan", exact=True).count() == 1
    assert page.get_by_text("Change seats", exact=True).count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(
        f"{world.base_url}/console/customers/solo-org/actions/change-seats",
        form={"csrf_token": token, "seats": "4"},
    )
    assert answer.status == 400 and "not priced per seat" in answer.text()
    assert _audited(world) == []
