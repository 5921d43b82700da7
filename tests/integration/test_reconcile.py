"""Reconciliation against stripesim: what Stripe lacks is reported, the CLI, the nightly job.

The simulator here has no webhook endpoint, so whatever is made in Stripe is missing locally
until reconciliation applies it. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import stripe
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from stripesim.testing import RunningSim
from tests.conftest import EXAMPLE_CATALOG
from tollgate.bootstrap import Container, build_container
from tollgate.cli import app as cli_app
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.models import (
    AuditLog,
    Charge,
    CreditEntry,
    CreditTransaction,
    Customer,
    Invoice,
    Notification,
    ReconciliationRun,
    StripeEvent,
)
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import InvalidRequest
from tollgate.jobs.reconcile import reconcile_nightly
from tollgate.services.reconcile import (
    ReconcileReport,
    get_reconciliation,
    list_drifts,
    recheck_object,
    reconcile,
)


def _paid_charge(client: stripe.StripeClient, amount: int = 1200) -> tuple[str, str]:
    customer = client.v1.customers.create(params={"email": "billing@acme.example"})
    intent = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    return customer.id, str(intent.latest_charge)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _ghost_charge(container: Container, charge_id: str) -> None:
    """A charge only the mirror has (Stripe answers 404 for it)."""
    now = container.clock.now()
    with container.db.transaction() as session:
        session.add(Customer(id="acme", email="a@acme.example", created_at=now, updated_at=now))
        session.flush()
        session.add(
            Charge(
                id=charge_id,
                customer_id="acme",
                amount=500,
                currency="usd",
                status="succeeded",
                created_at=now,
                updated_at=now,
            )
        )


def test_a_local_charge_unknown_to_stripe_is_reported_and_kept(
    container: Container, client: stripe.StripeClient
) -> None:
    now = container.clock.now()
    _ghost_charge(container, "ch_only_here")
    _, known = _paid_charge(client)
    failed_before = _metric("tollgate_reconcile_runs_total", outcome="failed")

    report = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=now - timedelta(hours=1),
    )

    assert report.counts == {"missing_locally": 1, "unknown_to_stripe": 1}
    assert report.healed == 1
    drifts = {
        drift.object_id: drift for drift in list_drifts(db=container.db, run_id=report.run_id)
    }
    ghost = drifts["ch_only_here"]
    assert (ghost.kind, ghost.healed, ghost.stripe) == ("unknown_to_stripe", False, None)
    assert ghost.local == {
        "status": "succeeded",
        "refunded": False,
        "currency": "usd",
        "amount": 500,
        "amount_refunded": 0,
    }
    assert drifts[known].kind == "missing_locally" and drifts[known].healed
    with container.db.engine.connect() as connection:
        assert connection.scalar(sa.select(Charge.id).where(Charge.id == "ch_only_here"))
        assert not connection.scalar(
            sa.select(sa.func.count())
            .select_from(AuditLog)
            .where(AuditLog.object_id == "ch_only_here")
        )
        healed_by = connection.scalar(sa.select(AuditLog.actor).where(AuditLog.object_id == known))
    assert healed_by == f"reconcile:{report.run_id}"
    assert _metric("tollgate_reconcile_last_run_drifts", kind="unknown_to_stripe") == 1
    assert _metric("tollgate_reconcile_runs_total", outcome="failed") == failed_before


def _runs(container: Container) -> int:
    with container.db.engine.connect() as connection:
        return int(connection.scalar(sa.select(sa.func.count()).select_from(ReconciliationRun)))


def test_one_object_is_checked_again_and_healed_as_a_run_of_its_own(
    container: Container, client: stripe.StripeClient
) -> None:
    _, charge = _paid_charge(client)
    _ghost_charge(container, "ch_only_here")
    last_run = _metric("tollgate_reconcile_last_run_drifts", kind="missing_locally")
    last_success = _metric("tollgate_reconcile_last_success_timestamp_seconds")

    report = recheck_object(container, object_id=charge)

    assert (report.object_type, report.object_id, report.trigger) == ("charge", charge, "console")
    assert (report.checked, report.counts, report.healed) == (1, {"missing_locally": 1}, 1)
    assert report.to_json()["object"] == {"type": "charge", "id": charge}
    assert get_reconciliation(db=container.db, run_id=report.run_id) == report
    with container.db.engine.connect() as connection:
        healed_by = connection.scalar(sa.select(AuditLog.actor).where(AuditLog.object_id == charge))
    assert healed_by == f"reconcile:{report.run_id}"
    # The gauges of the last run are a whole run's (the alerts read them), not one object's.
    assert _metric("tollgate_reconcile_last_run_drifts", kind="missing_locally") == last_run
    assert _metric("tollgate_reconcile_last_success_timestamp_seconds") == last_success

    again = recheck_object(container, object_id=charge)
    assert (again.checked, again.counts, again.healed) == (1, {}, 0)
    ghost = recheck_object(container, object_id="ch_only_here", object_type="charge")
    assert (ghost.counts, ghost.healed) == ({"unknown_to_stripe": 1}, 0)
    with container.db.engine.connect() as connection:
        assert connection.scalar(sa.select(Charge.id).where(Charge.id == "ch_only_here"))

    runs = _runs(container)
    for bad in ("cus_123", "nothing", "sub_" + "x" * 300, "sub_1; DROP", "ch_"):
        with pytest.raises(InvalidRequest, match="not an object reconciliation compares"):
            recheck_object(container, object_id=bad)
    with pytest.raises(InvalidRequest, match="not a connected account"):
        recheck_object(container, object_id=charge, account="acct_" + "x" * 300)
    assert _runs(container) == runs


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, migrated_url: str, sim: RunningSim
) -> Callable[..., object]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", migrated_url)
    monkeypatch.setenv("TOLLGATE_CATALOG", str(EXAMPLE_CATALOG))
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
    monkeypatch.setenv("STRIPE_API_BASE", sim.url)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli_app, list(args))


def test_cli_prints_a_table_then_json(run_cli, client: stripe.StripeClient) -> None:  # type: ignore[no-untyped-def]
    _, charge = _paid_charge(client, amount=4200)

    table = run_cli("reconcile", "--since", "24h")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert "object(s) checked, 1 drift(s), 1 healed" in lines[0]
    assert "missing_locally           1" in table.output
    drift_line = next(line for line in lines if charge in line)
    assert drift_line.startswith("missing_locally  charge " + charge)
    assert "(none)" in drift_line and "amount=4200" in drift_line
    assert drift_line.endswith("healed")

    answer = run_cli("reconcile", "--since", "24h", "--json")
    assert answer.exit_code == 0, answer.output
    report = json.loads(answer.output)
    assert (report["status"], report["counts"], report["healed"]) == ("succeeded", {}, 0)
    assert report["drifts"] == [] and report["checked"] >= 1

    bad = run_cli("reconcile", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since: 'yesterday' is not a window" in bad.output


def test_cli_checks_one_object_again(run_cli, client: stripe.StripeClient) -> None:  # type: ignore[no-untyped-def]
    _, charge = _paid_charge(client, amount=4200)

    one = run_cli("reconcile", "--object", charge)
    assert one.exit_code == 0, one.output
    first = one.output.splitlines()[0]
    assert f": charge {charge} at " in first
    assert first.endswith("UTC, 1 object(s) checked, 1 drift(s), 1 healed"), first
    answer = run_cli("reconcile", "--object", charge, "--json")
    report = json.loads(answer.output)
    assert (report["object"], report["counts"], report["trigger"]) == (
        {"type": "charge", "id": charge},
        {},
        "cli",
    )

    bad = run_cli("reconcile", "--object", "cus_123")
    assert bad.exit_code == 2 and "not an object reconciliation compares" in bad.output
    lone = run_cli("reconcile", "--account", "acct_123")
    assert lone.exit_code == 2 and "--account goes with --object" in lone.output


@pytest.fixture
def nightly(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[tuple[Container, FrozenClock]]:
    clock = FrozenClock(datetime.now(UTC).replace(hour=1, minute=30, second=0, microsecond=0))
    built = build_container(make_settings(db.url, TOLLGATE_RECONCILE_AT="02:00"), clock=clock)
    yield built, clock
    built.close()


def test_nightly_job_runs_once_a_day_after_its_time(
    nightly: tuple[Container, FrozenClock],
) -> None:
    app, clock = nightly
    assert reconcile_nightly(app) == "not due yet today"

    clock.advance(timedelta(hours=1))
    first = reconcile_nightly(app)
    assert isinstance(first, ReconcileReport)
    assert (first.trigger, first.status) == ("nightly", "succeeded")
    assert first.window_start == clock.now() - timedelta(hours=25)
    clock.advance(timedelta(minutes=30))
    assert reconcile_nightly(app) == "done today"

    clock.advance(timedelta(hours=23, minutes=40))
    second = reconcile_nightly(app)
    assert isinstance(second, ReconcileReport)
    # The window reaches back to where the last run stopped, with an hour of overlap.
    assert second.window_start == first.window_end - timedelta(hours=1)
    with app.db.engine.connect() as connection:
        slots = connection.execute(
            sa.select(ReconciliationRun.scheduled_for).order_by(ReconciliationRun.id)
        ).scalars()
        assert [slot.hour for slot in slots] == [2, 2]


def test_a_credit_ledger_problem_is_reported_by_kind_and_left_alone(container: Container) -> None:
    now = container.clock.now()
    with container.db.transaction() as session:
        session.add(
            Customer(id="ledger-org", email="a@ledger.example", created_at=now, updated_at=now)
        )
        session.flush()
        # A wallet entry written behind the ledger's back: no balance, no other side.
        transaction = CreditTransaction(
            customer_id="ledger-org",
            kind="grant",
            amount=50,
            reason="inserted by hand",
            idempotency_key="by-hand-1",
            actor="test",
            created_at=now,
        )
        session.add(transaction)
        session.flush()
        session.add(
            CreditEntry(
                transaction_id=transaction.id,
                customer_id="ledger-org",
                account="wallet",
                amount=50,
                created_at=now,
            )
        )

    report = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=now - timedelta(hours=1),
    )

    assert report.status == "succeeded"
    assert report.counts == {"ledger_unbalanced": 2} and report.healed == 0
    drifts = list(list_drifts(db=container.db, run_id=report.run_id))
    assert {(d.kind, d.object_type, d.object_id, d.healed) for d in drifts} == {
        ("ledger_unbalanced", "credit_ledger", "ledger-org", False)
    }
    problems = sorted(str(d.local["problem"]) for d in drifts if d.local)
    assert problems == [
        "credits account wallet of customer 'ledger-org': balance 0 but its entries sum to 50",
        "credits of customer 'ledger-org': accounts sum to 50, not 0",
    ]
    with container.db.engine.connect() as connection:
        entries = connection.scalar(
            sa.select(sa.func.count())
            .select_from(CreditEntry)
            .where(CreditEntry.customer_id == "ledger-org")
        )
    assert entries == 1  # reported, not repaired
    assert _metric("tollgate_reconcile_last_run_drifts", kind="ledger_unbalanced") == 2


def test_an_object_that_cannot_be_healed_fails_alone_and_heals_on_a_later_run(
    container: Container, client: stripe.StripeClient, sim: RunningSim
) -> None:
    now = container.clock.now()
    _, healthy = _paid_charge(client, amount=1100)
    unlucky_customer, unlucky = _paid_charge(client, amount=2200)
    # Stripe fails every read of one customer for a while: its charge cannot be applied.
    with sim.sim.lock:
        sim.sim.faults.queued.extend(
            {"kind": "500", "method": "GET", "path": f"/v1/customers/{unlucky_customer}"}
            for _ in range(12)
        )

    first = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=now - timedelta(hours=1),
    )

    assert first.status == "succeeded"
    assert first.counts == {"missing_locally": 2} and first.healed == 1
    healed = {d.object_id: d.healed for d in list_drifts(db=container.db, run_id=first.run_id)}
    assert healed == {healthy: True, unlucky: False}
    with container.db.engine.connect() as connection:
        stored = connection.execute(
            sa.select(StripeEvent.status, StripeEvent.last_error).where(
                StripeEvent.id == f"reconcile:{first.run_id}:{unlucky}"
            )
        ).one()
        assert connection.scalar(sa.select(Charge.id).where(Charge.id == healthy)) == healthy
        assert connection.scalar(sa.select(Charge.id).where(Charge.id == unlucky)) is None
    # Kept failed, with its error, for the webhook retry job.
    assert stored.status == "failed" and "StripeUnavailable" in str(stored.last_error)

    with sim.sim.lock:
        sim.sim.faults.queued.clear()
    second = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=now - timedelta(hours=1),
    )
    assert second.counts == {"missing_locally": 1} and second.healed == 1
    third = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=now - timedelta(hours=1),
    )
    assert third.counts == {} and third.healed == 0


def _paid_invoice(client: stripe.StripeClient, amount: int) -> str:
    customer = client.v1.customers.create(params={"email": "billing@acme.example"})
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": amount, "currency": "usd"}
    )
    invoice = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    assert paid.status == "paid"
    return str(paid.id)


def test_healing_a_payment_older_than_stripes_retries_sends_no_receipt(
    container: Container, client: stripe.StripeClient
) -> None:
    # A new install reconciling weeks back: the old payment is mirrored, and nobody gets a
    # receipt for it. A payment whose delivery was lost recently still gets its receipt.
    old = _paid_invoice(client, 1500)
    later = FrozenClock(container.clock.now() + timedelta(days=10))
    report = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=later,
        since=later.now() - timedelta(days=11),
    )
    assert report.status == "succeeded" and report.healed >= 1
    recent = _paid_invoice(client, 2500)
    report = reconcile(
        db=container.db,
        gateway=container.stripe,
        dunning=container.dunning_policy,
        clock=container.clock,
        since=container.clock.now() - timedelta(hours=1),
    )
    assert report.status == "succeeded"
    with container.db.engine.connect() as connection:
        mirrored = connection.execute(sa.select(Invoice.id, Invoice.status)).all()
        receipts = connection.execute(
            sa.select(Notification.cause).where(Notification.template == "payment_succeeded")
        ).all()
    assert {(old, "paid"), (recent, "paid")} <= set(mirrored)
    assert [cause for (cause,) in receipts] == [recent]
