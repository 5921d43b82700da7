"""Measure reconciliation: 10,000 charges and invoices in stripesim, empty and full mirror.

Run: `.venv/bin/python bench/reconcile.py [--objects 10000] [--database sqlite|postgresql|both]`
(PostgreSQL from TOLLGATE_BENCH_POSTGRES_URL, default the test server's URL).

stripesim runs in this process (served on a free port; the real SDK talks HTTP to it) with no
webhook endpoint. 100 customers each pay one invoice through the API; the rest of the charges and
invoices are copies of those, made in the simulator's state directly (the API would take minutes
to make 10,000). Then, on each database, `reconcile` runs twice on a new, empty mirror:

- heal: every object is missing, so every one is reported and healed through the webhook
  handlers (audit rows, change feed, the receipts a paid invoice queues), page by page;
- check: the mirror is full, nothing drifted, nothing is written but the report.

Printed per run: wall seconds, objects per second, this process's CPU seconds (the simulator's
threads included: the machine is shared, so the wall figures are lower bounds and CPU tells a
busy machine from a slow run), and resident memory at the start and its peak during the run
(sampled every 20 ms), which stays flat when pages are streamed.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from tollgate.services.reconcile import ReconcileReport, reconcile  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_harness", _HERE / "harness.py")
assert _spec and _spec.loader
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 20.0
CUSTOMERS = 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return resident * PAGE_BYTES / 2**20


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Sample resident memory while the block runs; yields [at start, peak] (MB), filled in."""
    figures = [rss_mb(), rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            figures[1] = max(figures[1], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
        figures[1] = max(figures[1], rss_mb())


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
                # A stored object is a Record filed in its table: copy it as a plain dict.
                clone = copy.deepcopy(dict(originals[n % len(originals)]))
                clone["id"] = new_id(prefix)
                # Spread over the last hours, so pages cut through seconds with many objects.
                clone["created"] = now - (n % 7200)
                account.add(clone)


def measure(kind: str, sim_url: str) -> dict[str, float]:
    """Heal into an empty mirror, then check the full one; print and return the seconds."""
    seconds: dict[str, float] = {}
    with harness.database(kind) as url:
        settings = load_settings(
            TOLLGATE_ENV="test",
            TOLLGATE_DATABASE_URL=url,
            TOLLGATE_CATALOG=str(REPO / "catalog.example.yaml"),
            STRIPE_SECRET_KEY="sk_test_bench",
            STRIPE_API_BASE=sim_url,
        )
        container = build_container(settings)
        try:
            for run in ("heal", "check"):
                cpu = time.process_time()
                with peak_rss() as memory:
                    began = time.perf_counter()
                    report: ReconcileReport = reconcile(
                        db=container.db,
                        gateway=container.stripe,
                        dunning=container.dunning_policy,
                        clock=container.clock,
                        since=container.clock.now() - timedelta(days=1),
                    )
                    wall = time.perf_counter() - began
                seconds[run] = wall
                print(
                    f"{kind:10} {run:5}: {report.checked:,} objects in {wall:.1f} s "
                    f"({report.checked / wall:,.0f}/s, {time.process_time() - cpu:.1f} s CPU), "
                    f"{report.drifts:,} drift(s), {report.healed:,} healed; "
                    f"RSS {memory[0]:.0f} MB, peak {memory[1]:.0f} MB",
                    flush=True,
                )
        finally:
            container.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000, help="charges + invoices")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)

    sim = Simulator(deliver_webhooks=False)
    results: dict[str, dict[str, float]] = {}
    with run_simulator(sim) as running:
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
        for kind in kinds:
            results[kind] = measure(kind, running.url)
    met = True
    for kind, seconds in results.items():
        for run, label in (("check", "checking a full mirror"), ("heal", "healing every object")):
            verdict = "meets" if seconds[run] < TARGET_SECONDS else "BELOW"
            met = met and seconds[run] < TARGET_SECONDS
            print(
                f"{kind}: {label}: {seconds[run]:.1f} s, {verdict} the "
                f"{TARGET_SECONDS:.0f} s target for {args.objects:,} objects"
            )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
