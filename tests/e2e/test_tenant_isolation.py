"""Issue 18, findings 4, 5 and 6: no tenant can reach another's data or stop the others.

Connected accounts are tenants: one revoking the platform's access (here: the account deleted,
so Stripe answers `account_invalid`) must be reported and skipped by the jobs that call Stripe
for every account, while the others are still served.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from tests.e2e.conftest import World
from tollgate.clock import FrozenClock
from tollgate.services.checkout_expiry import expire_stale_checkouts
from tollgate.services.reconcile import list_drifts, reconcile

URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}


def two_tenants(world: World) -> tuple[str, str]:
    """Two connected accounts with a customer each; the first then revokes access."""
    accounts = [
        world.stripe.v1.accounts.create(params={"type": "express", "country": "US"}).id
        for _ in range(2)
    ]
    for n, account in enumerate(accounts):
        world.create_customer(f"tenant-{n}", stripe_account=account)
        world.checkout(f"tenant-{n}", plan="pro", interval="month", **URLS)
    world.stripe.v1.accounts.delete(accounts[0])
    return accounts[0], accounts[1]


def test_one_refused_connected_account_is_reported_and_reconciliation_goes_on(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    gone, kept = two_tenants(world)
    # The kept tenant's Stripe has a subscription for the run to compare.
    customer = world.customer("tenant-1")["stripe_customer_id"]
    prices = world.stripe.v1.prices.list(params={"limit": 100}, options={"stripe_account": kept})
    price = next(p for p in prices.data if p.recurring and p.recurring.usage_type == "licensed")
    world.stripe.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price.id}]},
        options={"stripe_account": kept},
    )
    container = world.container
    report = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=container.clock.now() - timedelta(days=1),
    )
    assert report.status == "succeeded"
    drifts = list(list_drifts(db=container.db, run_id=report.run_id))
    refused = [d for d in drifts if d.kind == "account_refused"]
    assert [(d.object_type, d.object_id) for d in refused] == [("account", gone)]
    assert report.checked >= 1  # the kept tenant's subscription (the platform has none)


def test_one_refused_connected_account_does_not_stop_checkout_expiry_for_the_others(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    gone, kept = two_tenants(world)
    container = world.container
    later = FrozenClock(container.clock.now() + timedelta(hours=3))
    report = expire_stale_checkouts(
        db=container.db, gateway=container.stripe, settings=container.settings, clock=later
    )
    assert report.refused_accounts == [gone]
    assert report.expired == 1  # the kept tenant's session
    sessions = world.stripe.v1.checkout.sessions.list(options={"stripe_account": kept}).data
    assert [s.status for s in sessions] == ["expired"]
