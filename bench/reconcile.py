"""Measure reconciliation: 10,000 charges and invoices in stripesim, empty and full mirror.

Run: `.venv/bin/python bench/reconcile.py [--objects 10000] [--database-url URL]`.

stripesim runs in this process (served on a free port; the real SDK talks HTTP to it) with no
webhook endpoint. 100 customers each pay one invoice through the API; the rest of the charges and
invoices are copies of those, made in the simulator's state directly (the API would take minutes
to make 10,000). Then `reconcile` runs twice on a new database: over the empty mirror every object
is missing and healed through the webhook handlers; over the full mirror nothing is written.
Memory: peak RSS of the whole process (simulator included), before and after each run.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

# bench/stripesim.py is named like the simulator's package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import stripe  # noqa: E402

from stripesim.state import Simulator, new_id  # noqa: E402
from stripesim.testing import run_simulator  # noqa: E402
from tollgate.bootstrap import build_container  # noqa: E402
from tollgate.config import load_settings  # noqa: E402
from tollgate.db.migrate import upgrade  # noqa: E402
from tollgate.services.reconcile import reconcile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 20.0
CUSTOMERS = 100


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def populate(sim: Simulator, client: stripe.StripeClient, objects: int) -> None:
    """Make `objects` charges and invoices, half each: 100 paid through the API, then copies."""
    templates = []
    for n in range(CUSTOMERS):
        customer = client.v1.customers.create(params={"email": f"bench{n}@example.com"})
        pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
        client.v1.invoice_items.create(
            params={"customer": customer.id, "amount": 1000 + n, "currency": "usd"}
        )
        invoice = client.v1.invoices.create(
            params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
        )
        client.v1.invoices.finalize_invoice(invoice.id)
        paid = client.v1.invoices.pay(invoice.id, params={"payment_method": pm.id})
        templates.append(paid.id)
    with sim.lock:
        account = sim.platform
        charges = list(account.all("charge"))
        invoices = [account.objects[invoice_id] for invoice_id in templates]
        now = int(time.time())
        per_kind = objects // 2
        for kind, originals in (("charge", charges), ("invoice", invoices)):
            prefix = "ch" if kind == "charge" else "in"
            for n in range(per_kind - len(originals)):
                clone = copy.deepcopy(originals[n % len(originals)])
                clone["id"] = new_id(prefix)
                # Spread over the last hours, so pages cut through seconds with many objects.
                clone["created"] = now - (n % 7200)
                account.add(clone)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000, help="charges + invoices")
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args()

    sim = Simulator(deliver_webhooks=False)
    with run_simulator(sim) as running, tempfile.TemporaryDirectory() as scratch:
        client = stripe.StripeClient(
            "sk_test_bench", base_addresses={"api": running.url}, max_network_retries=0
        )
        started = time.perf_counter()
        populate(sim, client, args.objects)
        print(
            f"stripesim: {args.objects:,} charges and invoices for {CUSTOMERS} customers "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        upgrade(url)
        settings = load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=url,
            TOLLGATE_CATALOG=str(REPO / "catalog.example.yaml"),
            STRIPE_SECRET_KEY="sk_test_bench",
            STRIPE_API_BASE=running.url,
        )
        container = build_container(settings)
        seconds_by_run: list[float] = []
        try:
            for label in ("empty mirror (every object missing, healed)", "full mirror"):
                rss_before = peak_rss_mb()
                began = time.perf_counter()
                report = reconcile(
                    db=container.db,
                    gateway=container.stripe,
                    clock=container.clock,
                    since=container.clock.now() - timedelta(days=1),
                )
                seconds = time.perf_counter() - began
                seconds_by_run.append(seconds)
                print(
                    f"{label}: {report.checked:,} objects in {seconds:.1f} s "
                    f"({report.checked / seconds:,.0f}/s), {report.drifts:,} drift(s), "
                    f"{report.healed:,} healed; peak RSS {rss_before:.0f} -> "
                    f"{peak_rss_mb():.0f} MB",
                    flush=True,
                )
        finally:
            container.close()
    healing, checking = seconds_by_run
    for label, seconds in (("checking a full mirror", checking), ("healing every object", healing)):
        verdict = "meets" if seconds < TARGET_SECONDS else "BELOW"
        print(f"{label}: {seconds:.1f} s, {verdict} the {TARGET_SECONDS:.0f} s target")
    # The nightly case is the full mirror; healing everything is the worst case, reported above.
    return 0 if checking < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
