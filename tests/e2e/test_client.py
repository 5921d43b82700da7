"""The Python client, over HTTP and in-process: the same verbs, views and errors.

Each story runs over both backends, with usage counted in the database and in Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from tests.e2e.conftest import World, open_client
from tollgate.client import (
    ApiError,
    CheckoutSession,
    Conflict,
    Customer,
    InvalidRequest,
    LocalTollgate,
    NotFound,
    Subscription,
    Tollgate,
)


@pytest.fixture
def world(make_world: Callable[..., World], counters: dict[str, str]) -> World:
    return make_world(**counters)


@pytest.fixture
def billing(backend: str, world: World) -> Iterator[Tollgate | LocalTollgate]:
    with open_client(backend, world.container, world.base_url, world.key) as client:
        yield client


def test_the_client_signs_up_checks_out_and_manages_the_subscription(
    billing: Tollgate | LocalTollgate, world: World
) -> None:
    customer = billing.create_customer("acme", email="billing@acme.example", name="Acme")
    assert isinstance(customer, Customer) and isinstance(customer.created, datetime)
    assert (customer.plan, customer.status, customer.stripe_customer_id[:4]) == (  # type: ignore[index]
        "free",
        "none",
        "cus_",
    )
    assert billing.create_customer("acme", email="billing@acme.example", name="Acme") == customer
    with pytest.raises(Conflict):
        billing.create_customer("acme", email="other@acme.example")

    renamed = billing.update_customer("acme", name="Acme Inc", metadata={"seats": "4"})
    assert (renamed.name, renamed.metadata) == ("Acme Inc", {"seats": "4"})

    session = billing.checkout(
        "acme",
        plan="pro",
        interval="month",
        success_url="https://app.example/ok",
        cancel_url="https://app.example/no",
    )
    assert isinstance(session, CheckoutSession)
    assert world.pay(session.url).status_code == 303
    world.settle()
    assert (billing.get_customer("acme").plan, billing.get_customer("acme").status) == (
        "pro",
        "trialing",
    )
    subscription = billing.get_subscription("acme")
    assert isinstance(subscription, Subscription) and isinstance(subscription.trial_end, datetime)

    canceling = billing.cancel_subscription("acme", at_period_end=True)
    assert canceling.status == "canceling"
    assert billing.resume_subscription("acme").status == "trialing"
    assert billing.portal("acme", return_url="https://app.example/account").startswith("http")


def test_the_client_raises_tollgates_errors(billing: Tollgate | LocalTollgate) -> None:
    with pytest.raises(NotFound) as missing:
        billing.get_customer("ghost")
    assert "ghost" in missing.value.message
    billing.create_customer("bigco", email="ap@bigco.example", offline=True, plan="enterprise")
    with pytest.raises(InvalidRequest) as bad:
        billing.change_subscription("bigco", plan="platinum", interval="year")
    assert bad.value.param == "plan"
    with pytest.raises(InvalidRequest) as offline:
        billing.checkout(
            "bigco",
            plan="pro",
            interval="month",
            success_url="https://app.example/ok",
            cancel_url="https://app.example/no",
        )
    assert "offline" in offline.value.message
    moved = billing.change_subscription("bigco", plan="pro", interval="year")
    assert (moved.plan, moved.status) == ("pro", "active")


def test_a_bad_key_is_an_api_error_with_its_type_and_status(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    with (
        Tollgate(world.base_url, "tg_write_not-a-key") as client,
        pytest.raises(ApiError) as raised,
    ):
        client.get_customer("acme")
    assert (raised.value.type, raised.value.status) == ("authentication_error", 401)
