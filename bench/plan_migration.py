"""Measure a plan migration: 10,000 Pro v1 subscribers moved to v2 against stripesim.

Run: `.venv/bin/python bench/plan_migration.py [--subscribers 10000] [--at now|renewal]
[--database sqlite|postgresql|both]` (PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL).

stripesim runs in this process (served on a free port; the real SDK talks HTTP to it) with no
webhook endpoint. 50 subscribers are made through Stripe's API (customer, then an invoiced Pro
v1 subscription); the rest are copies of them made in the simulator's state directly (the API
would take minutes), and the mirror rows Tollgate's webhooks would have written (customer and
subscription, Pro v1) are inserted directly. Then the catalog is synced with Pro at $39 (v2) and
`run_plan_migration` moves every subscriber through the API exactly as `tollgate plans migrate`
does: per subscriber a retrieve, an update (or, at renewal, a schedule create and update) with an
idempotency key, and its progress row committed.

Printed per database: subscribers moved, wall seconds, subscribers per second, this process's
CPU seconds (the simulator's threads included: the machine is shared, so wall figures are lower
bounds and CPU tells a busy machine from a slow run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# bench/stripesim.py is named like the simulator's package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import stripe  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from stripesim.state import Simulator, new_id  # noqa: E402
from stripesim.testing import run_simulator  # noqa: E402
from tollgate.bootstrap import Container, build_container  # noqa: E402
from tollgate.catalog_file import load_catalog_file  # noqa: E402
from tollgate.config import load_settings  # noqa: E402
from tollgate.db.tables import CUSTOMERS, SUBSCRIPTIONS  # noqa: E402
from tollgate.services.catalog import sync_catalog  # noqa: E402
from tollgate.services.plan_migrations import (  # noqa: E402
    MigrationRequest,
    run_plan_migration,
    start_plan_migration,
)

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "catalog.example.yaml"
TEMPLATES = 50


def populate(sim: Simulator, client: stripe.StripeClient, count: int) -> list[tuple[str, str]]:
    """Make `count` Pro v1 subscribers in Stripe; return (stripe customer, subscription) ids."""
    price = client.v1.prices.list(params={"lookup_keys": ["tollgate_pro_month_usd"]}).data[0]
    made = []
    for n in range(min(TEMPLATES, count)):
        customer = client.v1.customers.create(params={"email": f"bench{n}@example.com"})
        subscription = client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "collection_method": "send_invoice",
                "days_until_due": 30,
            }
        )
        made.append((customer.id, subscription.id))
    with sim.lock:
        account = sim.platform
        templates = [(account.objects[c], account.objects[s]) for c, s in made]
        for n in range(count - len(made)):
            # Plain copies (Records reindex themselves on every write while being built).
            customer, subscription = json.loads(json.dumps(templates[n % len(templates)]))
            customer["id"] = new_id("cus")
            account.add(customer)
            subscription["id"] = new_id("sub")
            subscription["customer"] = customer["id"]
            for item in subscription["items"]["data"]:
                item["id"] = new_id("si")
                item["subscription"] = subscription["id"]
                account.add(json.loads(json.dumps(item)))
            account.add(subscription)
            made.append((customer["id"], subscription["id"]))
    return made


def mirror(container: Container, subscribers: list[tuple[str, str]]) -> None:
    """Write the mirror rows the webhooks would have written: customer and Pro v1 subscription."""
    now = datetime.now(UTC)
    customers = [
        {
            "id": f"bench-{n:06d}",
            "stripe_customer_id": stripe_customer,
            "email": f"bench{n}@example.com",
            "offline": False,
            "metadata": {},
            "deleted": False,
            "state_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        for n, (stripe_customer, _) in enumerate(subscribers)
    ]
    subscriptions = [
        {
            "id": subscription,
            "customer_id": f"bench-{n:06d}",
            "status": "active",
            "cancel_at_period_end": False,
            "plan": "pro",
            "plan_version": 1,
            "interval": "month",
            "currency": "usd",
            "seats": 1,
            "created_at": now,
            "updated_at": now,
        }
        for n, (_, subscription) in enumerate(subscribers)
    ]
    with container.db.transaction() as session:
        connection = session.connection()
        for start in range(0, len(customers), 1000):
            connection.execute(insert(CUSTOMERS), customers[start : start + 1000])
            connection.execute(insert(SUBSCRIPTIONS), subscriptions[start : start + 1000])


def measure(kind: str, sim: Simulator, sim_url: str, count: int, at: str) -> None:
    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": sim_url}, max_network_retries=0
    )
    sim.reset()
    with harness.database(kind) as url, tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=url,
            TOLLGATE_CATALOG=str(EXAMPLE),
            STRIPE_SECRET_KEY="sk_test_bench",
            STRIPE_API_BASE=sim_url,
        )
        container = build_container(settings)
        try:
            now = container.clock.now
            sync_catalog(
                catalog=load_catalog_file(EXAMPLE),
                gateway=container.stripe,
                db=container.db,
                now=now(),
            )
            began = time.perf_counter()
            subscribers = populate(sim, client, count)
            mirror(container, subscribers)
            made = time.perf_counter() - began
            dearer = Path(folder) / "dearer.yaml"
            dearer.write_text(EXAMPLE.read_text().replace('amount: "29.00"', 'amount: "39.00"'))
            sync_catalog(
                catalog=load_catalog_file(dearer),
                gateway=container.stripe,
                db=container.db,
                now=now(),
            )
            container.live_catalog.refresh()
            catalog = container.catalog
            request = MigrationRequest("pro", 1, 2, at=at, proration="none")
            cpu = time.process_time()
            began = time.perf_counter()
            started = start_plan_migration(
                db=container.db,
                catalog=catalog,
                clock=container.clock,
                request=request,
                actor="bench",
            )
            stored = time.perf_counter() - began
            finished = run_plan_migration(
                db=container.db,
                catalog=catalog,
                gateway=container.stripe,
                clock=container.clock,
                migration_id=started.id,
            )
            wall = time.perf_counter() - began
            moved = finished.counts.get("done", 0)
            print(
                f"{kind:10} at {at:7}: {moved:,} of {count:,} subscribers moved in {wall:.1f} s "
                f"({moved / wall:,.0f}/s; preview and progress rows stored in {stored:.1f} s; "
                f"{time.process_time() - cpu:.1f} s CPU); setup {made:.1f} s; "
                f"counts {finished.counts}",
                flush=True,
            )
        finally:
            container.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--at", choices=("now", "renewal"), default="now")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    with run_simulator() as running:
        for kind in kinds:
            measure(kind, running.sim, running.url, args.subscribers, args.at)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
