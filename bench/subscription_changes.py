"""Measure a direct subscription change (`change_subscription`, what `PUT …/subscription` runs):
its latency, this process's CPU and the Stripe calls it makes, and whether the mirror holds the
change when the call returns.

stripesim runs in this process (served on a free port; the real SDK talks HTTP to it) with no
webhook endpoint, so nothing but the call itself can bring a change to the mirror. 20 customers
with a card subscribe to Team at 2 seats; then each change moves one customer's seats up by one,
round-robin, `--changes` times, one after another. Printed per database: p50 and p99 of a
change's wall time, this process's CPU per change (the simulator's threads included, so compare
builds, not absolute figures), Stripe calls per change (`tollgate_stripe_calls_total`), and how
many customers' mirror rows hold their last change's seats.

Run: `.venv/bin/python bench/subscription_changes.py [--changes 200]
[--database sqlite|postgresql|both]` (PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL, default the
test server's URL). To compare with an older build, run it with that build's `src` first on
PYTHONPATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import sqlalchemy as sa  # noqa: E402
import stripe  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from stripesim.testing import run_simulator  # noqa: E402
from tollgate.bootstrap import build_container  # noqa: E402
from tollgate.client.local import LocalTollgate  # noqa: E402
from tollgate.config import load_settings  # noqa: E402
from tollgate.services.catalog import sync_catalog  # noqa: E402
from tollgate.services.subscriptions.changing import (  # noqa: E402
    SubscriptionRequest,
    change_subscription,
)

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

REPO = Path(__file__).resolve().parent.parent
CUSTOMERS = 20


def _stripe_calls() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "tollgate_stripe_calls"
        for sample in metric.samples
        if sample.name == "tollgate_stripe_calls_total"
    )


def measure(kind: str, sim_url: str, changes: int) -> None:
    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": sim_url}, max_network_retries=0
    )
    with harness.database(kind) as url:
        app = build_container(
            load_settings(
                TOLLGATE_ENV="test",
                TOLLGATE_DATABASE_URL=url,
                TOLLGATE_CATALOG=str(REPO / "catalog.example.yaml"),
                STRIPE_SECRET_KEY="sk_test_bench",
                STRIPE_API_BASE=sim_url,
            )
        )
        try:
            sync_catalog(catalog=app.catalog, gateway=app.stripe)
            tollgate = LocalTollgate(app)
            seats: dict[str, int] = {}
            for n in range(CUSTOMERS):
                customer_id = f"{kind}-org-{n}"
                stripe_id = tollgate.create_customer(
                    customer_id, email=f"o{n}@bench.example"
                ).stripe_customer_id
                assert stripe_id is not None
                method = client.v1.payment_methods.attach(
                    "pm_card_visa", params={"customer": stripe_id}
                )
                client.v1.customers.update(
                    stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
                )
                seats[customer_id] = 2
                change_subscription(
                    app,
                    customer_id=customer_id,
                    wanted=SubscriptionRequest("team", "month", seats=2, trial_days=0),
                )
            customers = list(seats)
            latencies: list[float] = []
            calls, cpu = _stripe_calls(), time.process_time()
            for n in range(changes):
                customer_id = customers[n % CUSTOMERS]
                seats[customer_id] += 1
                started = time.perf_counter()
                change_subscription(
                    app,
                    customer_id=customer_id,
                    wanted=SubscriptionRequest("team", "month", seats=seats[customer_id]),
                )
                latencies.append(time.perf_counter() - started)
            cpu, calls = time.process_time() - cpu, _stripe_calls() - calls
            with app.db.engine.connect() as connection:
                mirrored = dict(
                    connection.execute(
                        sa.text("SELECT customer_id, seats FROM subscriptions")
                    ).all()
                )
        finally:
            app.close()
    q = statistics.quantiles(latencies, n=100)
    held = sum(1 for customer_id, count in seats.items() if mirrored.get(customer_id) == count)
    print(
        f"{kind}: {changes} seat changes, p50 {q[49] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms, "
        f"{cpu / changes * 1e3:.1f} ms CPU a change (this process, stripesim included), "
        f"{calls / changes:.1f} Stripe calls a change; the mirror holds the last change of "
        f"{held} of {CUSTOMERS} customers when the calls return (no webhooks here)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    with run_simulator() as sim:
        for kind in kinds:
            measure(kind, sim.url, args.changes)


if __name__ == "__main__":
    main()
