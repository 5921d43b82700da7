"""Issue 20: a synced catalog reaches running servers, and a price rise grandfathers subscribers.

Each story runs Tollgate over HTTP with stripesim's webhooks, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import DAY, World
from tollgate.bootstrap import build_container
from tollgate.catalog_file import load_catalog_file
from tollgate.config import Settings
from tollgate.services.catalog import AnyChange, sync_catalog

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog.example.yaml"
T0 = 1_790_000_000
HOUR = 3600


def dearer_catalog(tmp_path: Path) -> Path:
    """The example with Pro at $39 (and $390 a year) and 150,000 runs included."""
    text = (
        EXAMPLE.read_text()
        .replace('amount: "29.00"', 'amount: "39.00"')
        .replace('amount: "290.00"', 'amount: "390.00"')
        .replace("runs: {included: 100000,", "runs: {included: 150000,")
    )
    assert text != EXAMPLE.read_text()
    path = tmp_path / "dearer.yaml"
    path.write_text(text)
    return path


def sync(world: World, path: Path) -> list[AnyChange]:
    container = world.container
    return sync_catalog(
        catalog=load_catalog_file(path),
        gateway=container.stripe,
        db=container.db,
        now=container.clock.now(),
    )


def pro_month(catalog_json: dict[str, Any]) -> int:
    pro = next(plan for plan in catalog_json["plans"] if plan["id"] == "pro")
    return int(next(p["amount"] for p in pro["prices"] if p["interval"] == "month"))


def wait_for(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait until `predicate()` holds (at most `seconds`)."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, "it did not happen in time"
        time.sleep(0.02)


def paying_customer(world: World, customer_id: str, clock: str) -> Any:
    world.create_customer(customer_id, test_clock=clock)
    session = world.checkout(customer_id, plan="pro", interval="month", trial_days=0)
    assert world.pay(session["url"]).status_code == 303
    world.settle()
    customer = world.customer(customer_id)
    assert (customer["plan"], customer["status"]) == ("pro", "active")
    return customer


def runs_included(world: World, customer_id: str) -> int:
    granted = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return int(granted["features"]["runs"]["included"])


def test_a_synced_catalog_reaches_every_running_server_within_seconds(
    make_world: Callable[..., World], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.2)
    # A second server process on the same database (its own container, cache and poller).
    other = build_container(make_settings(world.db.url, TOLLGATE_CATALOG_REFRESH=0.2))
    other.live_catalog.start_background()
    try:
        assert pro_month(world.call("GET", "/v1/catalog")) == 2900
        assert other.catalog.plans["pro"].prices[0].amount_minor == 2900
        sync(world, dearer_catalog(tmp_path))
        # Each server's poller (every 0.2 s here) swaps the new catalog in: no restart, and no
        # request waits on the look. The deadline is generous on purpose, since a loaded CI machine
        # once took 3.5 s; how soon it arrives is the refresh interval, not a timed test's business.
        servers = (world.container.live_catalog, other.live_catalog)
        assert [server.swaps for server in servers] == [0, 0]
        wait_for(lambda: pro_month(world.call("GET", "/v1/catalog")) == 3900)
        wait_for(lambda: other.catalog.plans["pro"].prices[0].amount_minor == 3900)
        assert [server.swaps for server in servers] == [1, 1]
        served = world.call("GET", "/v1/catalog")
        assert served["version"] == other.catalog.version == 1
        assert next(p for p in served["plans"] if p["id"] == "pro")["version"] == 1
    finally:
        other.close()


def test_no_reader_sees_half_of_a_catalog_while_syncs_swap_it(world: World, tmp_path: Path) -> None:
    """Readers hold one Catalog per look: its monthly and yearly Pro prices always agree."""
    container = world.container
    dearer = dearer_catalog(tmp_path)
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            catalog = container.catalog
            prices = {p.interval: p.amount_minor for p in catalog.plans["pro"].prices}
            seen.add((prices["month"], prices["year"]))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for path in (dearer, EXAMPLE, dearer):
            sync(world, path)
            container.live_catalog.refresh()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert seen <= {(2900, 29000), (3900, 39000)}
    assert (3900, 39000) in seen


def test_a_price_rise_keeps_pro_subscribers_on_v1_and_charges_new_ones_v2(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world(TOLLGATE_CATALOG_REFRESH=0.1)
    assert sync(world, EXAMPLE) == []  # Stripe had it all; this sync records plan versions 1
    clock = world.test_clock(T0)
    early = paying_customer(world, "early", clock)
    assert world.customer("early")["plan_version"] == 1
    assert runs_included(world, "early") == 100_000

    changes = sync(world, dearer_catalog(tmp_path))
    described = [change.describe() for change in changes]
    assert described[0] == (
        "+ plan pro v2: $29.00/month -> $39.00/month; $290.00/year -> $390.00/year; "
        "features changed: runs; subscribers stay where they are (1 on v1) until migrated"
    )
    assert "+ price tollgate_pro_v2_month_usd: $39.00/month" in described
    assert not [line for line in described if line.startswith("- price")]  # v1 stays on sale
    wait_for(lambda: world.container.catalog.plans["pro"].version == 2)

    late = paying_customer(world, "late", clock)
    assert late["plan_version"] == 2
    assert world.subscription("early")["plan_version"] == 1
    assert world.subscription("late")["plan_version"] == 2
    # Entitlements follow each customer's version.
    assert runs_included(world, "early") == 100_000
    assert runs_included(world, "late") == 150_000
    assert world.call("GET", "/v1/customers/early/entitlements")["plan_version"] == 1
    # A seat-free change to the same plan keeps the grandfathered price.
    kept = world.put_subscription("early", plan="pro", interval="month")
    assert kept["plan_version"] == 1

    world.advance(clock, T0 + 30 * DAY + 2 * HOUR)
    renewals = {
        name: [
            i.total
            for i in world.invoices(customer["stripe_customer_id"])
            if i.billing_reason == "subscription_cycle"
        ]
        for name, customer in (("early", early), ("late", late))
    }
    assert renewals == {"early": [2900], "late": [3900]}
    assert world.customer("early")["plan_version"] == 1
