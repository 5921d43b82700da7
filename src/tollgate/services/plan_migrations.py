"""Moving a plan's subscribers from one version to another (issue 20): preview, then migrate.

A migration is stored before anything changes in Stripe: the migration row and one progress row
per subscriber (pending). Running it moves pending subscribers one by one and marks each done
in its own transaction, so a run stopped anywhere (a crash, a kill, Stripe down) resumes with
the subscribers left. Nobody is changed twice: each Stripe write carries the idempotency key
`plan-migrate-{migration}-{customer}` (a subscriber whose write went through but whose row was
not yet marked gets Stripe's stored answer on the retry), and a subscription Stripe already has
on the new version is marked done without a write.

`at=now` swaps the subscription's prices at once (prorated as asked); `at=renewal` leaves the
current period alone and attaches a subscription schedule whose next phase carries the new
prices from the renewal on. With `notify`, each customer is emailed (template `price_change`)
the date and the new price when the migration is started.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tollgate.clock import Clock
from tollgate.db.queries import plan_migrations as queries
from tollgate.db.queries.audit import record_audit
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, Plan
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.domain.events import ENDED_STATUSES, SubscriptionSnapshot
from tollgate.domain.subscriptions import Terms, subscription_terms
from tollgate.services.outbox import queue_email
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import object_id, subscription_snapshot
from tollgate_client.views import timestamp_json

log = logging.getLogger("tollgate.plan_migrations")

TIMINGS = ("renewal", "now")
PRORATIONS = ("create_prorations", "always_invoice", "none")
NOTIFY_TEMPLATE = "price_change"


@dataclass(frozen=True)
class MigrationRequest:
    """What the operator asked: move `plan`'s subscribers from one version to another."""

    plan: str
    from_version: int
    to_version: int
    at: str = "renewal"
    proration: str = "none"
    customers: tuple[str, ...] | None = None  # None: every subscriber on `from_version`
    notify: bool = False


@dataclass(frozen=True)
class MigrationLine:
    """One subscriber's change: what it pays now, what it will pay, and from when."""

    customer_id: str
    subscription_id: str
    interval: str | None
    currency: str | None
    quantity: int
    old_amount_minor: int | None
    new_amount_minor: int | None
    effective_at: datetime | None
    status: str = "pending"  # pending | done | failed | skipped
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        def money(amount: int | None) -> dict[str, Any] | None:
            if amount is None or self.currency is None:
                return None
            return {"amount": amount, "currency": self.currency}

        return {
            "customer": self.customer_id,
            "subscription": self.subscription_id,
            "interval": self.interval,
            "quantity": self.quantity,
            "old_price": money(self.old_amount_minor),
            "new_price": money(self.new_amount_minor),
            "effective_at": timestamp_json(self.effective_at),
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class MigrationView:
    """A migration and where it stands."""

    id: str
    plan: str
    from_version: int
    to_version: int
    at: str
    proration: str
    notify: bool
    status: str
    counts: dict[str, int]
    created: datetime
    lines: list[MigrationLine] = field(default_factory=list)

    def to_json(self, *, with_lines: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "plan": self.plan,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "at": self.at,
            "proration": self.proration,
            "notify": self.notify,
            "status": self.status,
            "counts": self.counts,
            "created": timestamp_json(self.created),
        }
        if with_lines:
            body["customers"] = [line.to_json() for line in self.lines]
        return body


# -- preview ----------------------------------------------------------------------------------


def _check(catalog: Catalog, request: MigrationRequest) -> tuple[Plan, Plan]:
    """Return the plan at both versions, or raise InvalidRequest naming what is wrong."""
    plan = catalog.plans.get(request.plan)
    if plan is None:
        raise InvalidRequest(
            f"unknown plan {request.plan!r} (plans are: {', '.join(sorted(catalog.plans))})",
            param="plan",
        )
    versions = {plan.version, *catalog.plan_versions.get(plan.id, {})}
    listed = ", ".join(str(number) for number in sorted(versions))
    for name, number in (("from", request.from_version), ("to", request.to_version)):
        if number not in versions:
            raise InvalidRequest(
                f"plan {plan.id!r} has no version {number} (its versions: {listed})", param=name
            )
    if request.from_version == request.to_version:
        raise InvalidRequest("from and to are the same version", param="to")
    if request.at not in TIMINGS:
        raise InvalidRequest(f"at must be one of {', '.join(TIMINGS)}", param="at")
    if request.proration not in PRORATIONS:
        raise InvalidRequest(f"proration must be one of {', '.join(PRORATIONS)}", param="proration")
    old = catalog.plan_version(plan.id, request.from_version)
    new = catalog.plan_version(plan.id, request.to_version)
    if new.is_free or old.is_free:
        raise InvalidRequest("a free plan version has no prices to migrate", param="plan")
    return old, new


def _amount(plan: Plan, interval: str | None, currency: str | None, quantity: int) -> int | None:
    for price in plan.prices:
        if price.interval == interval and price.currency == currency:
            return price.amount_minor * (quantity if plan.per_seat else 1)
    return None


def _lines(
    db: Database, catalog: Catalog, request: MigrationRequest, now: datetime
) -> list[MigrationLine]:
    old, new = _check(catalog, request)
    with db.engine.connect() as connection:
        rows = queries.subscribers_on_version(
            connection, request.plan, request.from_version, request.customers
        )
        connection.rollback()
    if request.customers is not None:
        found = {row.customer_id for row in rows}
        missing = sorted(set(request.customers) - found)
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            raise InvalidRequest(
                f"{len(missing)} customer(s) have no live {request.plan} "
                f"v{request.from_version} subscription: {shown}",
                param="customers",
            )
    lines = []
    for row in rows:
        quantity = int(row.seats or 1)
        new_amount = _amount(new, row.interval, row.currency, quantity)
        problem = None
        if new_amount is None:
            problem = f"v{request.to_version} has no {row.interval} price in {row.currency or '?'}"
        lines.append(
            MigrationLine(
                customer_id=row.customer_id,
                subscription_id=row.subscription_id,
                interval=row.interval,
                currency=row.currency,
                quantity=quantity,
                old_amount_minor=_amount(old, row.interval, row.currency, quantity),
                new_amount_minor=new_amount,
                effective_at=now if request.at == "now" else row.current_period_end,
                status="skipped" if problem else "pending",
                error=problem,
            )
        )
    return lines


def preview_plan_migration(
    *, db: Database, catalog: Catalog, clock: Clock, request: MigrationRequest
) -> list[MigrationLine]:
    """Return each subscriber's price change, changing nothing."""
    return _lines(db, catalog, request, clock.now())


# -- starting ---------------------------------------------------------------------------------


def _migration_id(request: MigrationRequest, now: datetime) -> str:
    asked = json.dumps([request.plan, request.from_version, request.to_version, now.isoformat()])
    return "pm_" + hashlib.sha256(asked.encode()).hexdigest()[:24]


def start_plan_migration(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    request: MigrationRequest,
    actor: str,
) -> MigrationView:
    """Store the migration and its subscribers (and queue the emails); change nothing in Stripe.

    An unfinished migration of the same plan between the same versions is returned instead
    (resume it); a different one for the same versions is a Conflict. Subscribers a finished one
    moved, whose rows have not heard of it yet, are left out; if that leaves none, the finished
    migration is returned.
    """
    now = clock.now()
    with db.engine.connect() as connection:
        unfinished = queries.unfinished_migration(
            connection, request.plan, request.from_version, request.to_version
        )
        connection.rollback()
    if unfinished is not None:
        return _resume(db, request, unfinished)
    lines = _lines(db, catalog, request, now)
    migration_id = _migration_id(request, now)
    plan_name = catalog.plans[request.plan].name
    with db.write_transaction() as session:
        connection = session.connection()
        # Checked again under the lock: the same request sent at once started it meanwhile,
        # or started it and finished it already (a subscriber's row can still show the old
        # version until Stripe's webhook arrives): nobody is moved, or emailed, twice.
        queries.hold_migrations(connection)
        unfinished = queries.unfinished_migration(
            connection, request.plan, request.from_version, request.to_version
        )
        if unfinished is not None:
            return _resume(db, request, unfinished)
        moved = queries.moved_subscriptions(
            connection, request.plan, request.from_version, request.to_version
        )
        left = [line for line in lines if line.subscription_id not in moved]
        if lines and not left:
            return get_plan_migration(db=db, migration_id=moved[lines[-1].subscription_id])
        lines = left
        row = {
            "id": migration_id,
            "plan": request.plan,
            "from_version": request.from_version,
            "to_version": request.to_version,
            "at": request.at,
            "proration": request.proration,
            "notify": request.notify,
            "status": "running",
            "actor": actor,
            "created_at": now,
            "updated_at": now,
        }
        customers = [
            {
                "migration_id": migration_id,
                "customer_id": line.customer_id,
                "subscription_id": line.subscription_id,
                "interval": line.interval,
                "currency": line.currency,
                "quantity": line.quantity,
                "old_amount_minor": line.old_amount_minor,
                "new_amount_minor": line.new_amount_minor,
                "effective_at": line.effective_at,
                "status": line.status,
                "error": line.error,
                "updated_at": now,
            }
            for line in lines
        ]
        queries.insert_migration(connection, row, customers)
        record_audit(
            connection,
            actor=actor,
            object_type="plan_migration",
            object_id=migration_id,
            action="started",
            before={"plan": request.plan, "version": request.from_version},
            after={
                "plan": request.plan,
                "version": request.to_version,
                "at": request.at,
                "proration": request.proration,
                "customers": len(customers),
            },
            now=now,
        )
        if request.notify:
            for line in lines:
                if line.status != "pending" or line.new_amount_minor is None:
                    continue
                queue_email(
                    connection,
                    customer_id=line.customer_id,
                    template=NOTIFY_TEMPLATE,
                    cause=f"plan-migration:{migration_id}",
                    facts={
                        "plan": request.plan,
                        "plan_name": plan_name,
                        "interval": line.interval,
                        "effective_at": line.effective_at,
                        "old_amount": {
                            "amount": line.old_amount_minor,
                            "currency": line.currency,
                        },
                        "amount": {"amount": line.new_amount_minor, "currency": line.currency},
                    },
                    now=now,
                )
    return get_plan_migration(db=db, migration_id=migration_id)


def _resume(db: Database, request: MigrationRequest, unfinished: Any) -> MigrationView:
    """The unfinished migration between the request's versions, if it has the same settings."""
    if (unfinished.at, unfinished.proration) != (request.at, request.proration):
        raise Conflict(
            f"migration {unfinished.id} of {request.plan} v{request.from_version} -> "
            f"v{request.to_version} is unfinished with other settings; resume it first",
            param="plan",
        )
    return get_plan_migration(db=db, migration_id=unfinished.id)


def get_plan_migration(*, db: Database, migration_id: str) -> MigrationView:
    """Return the migration with each subscriber's line, or raise NotFound."""
    with db.engine.connect() as connection:
        row = queries.migration(connection, migration_id)
        if row is None:
            connection.rollback()
            raise NotFound(f"no plan migration {migration_id!r}", param="migration")
        counts = queries.status_counts(connection, migration_id)
        customers = queries.migration_customers(connection, migration_id)
        connection.rollback()
    return MigrationView(
        id=row.id,
        plan=row.plan,
        from_version=row.from_version,
        to_version=row.to_version,
        at=row.at,
        proration=row.proration,
        notify=row.notify,
        status=row.status,
        counts=counts,
        created=row.created_at,
        lines=[
            MigrationLine(
                customer_id=item.customer_id,
                subscription_id=item.subscription_id,
                interval=item.interval,
                currency=item.currency,
                quantity=item.quantity,
                old_amount_minor=item.old_amount_minor,
                new_amount_minor=item.new_amount_minor,
                effective_at=item.effective_at,
                status=item.status,
                error=item.error,
            )
            for item in customers
        ],
    )


# -- running ----------------------------------------------------------------------------------


class _Prices:
    """Price ids by lookup key, looked up once per migration run (not once per subscriber)."""

    def __init__(self, gateway: StripeGateway) -> None:
        self.gateway = gateway
        self.ids: dict[str, str] = {}

    def of(self, keys: Iterable[str]) -> dict[str, str]:
        missing = [key for key in keys if key not in self.ids]
        if missing:
            self.ids.update(self.gateway.price_ids(missing))
        return {key: self.ids[key] for key in keys}


def _new_items(current: SubscriptionSnapshot, terms: Terms, prices: _Prices) -> list[Any]:
    """Return the subscription's items on the new version: the plan price swapped in place,
    overage prices of the old version out and the new version's in."""
    base = current.base_item
    assert base is not None
    keys = [terms.lookup_key, *terms.overage_lookup_keys.values()]
    ids = prices.of(keys)
    items: list[dict[str, Any]] = [
        {"id": base.id, "price": ids[terms.lookup_key], "quantity": terms.quantity}
    ]
    wanted_overage = {ids[key] for key in terms.overage_lookup_keys.values()}
    kept = {item.price_id for item in current.items}
    for item in current.items:
        if item.id != base.id and item.price_id not in wanted_overage:
            items.append({"id": item.id, "deleted": True})
    items += [{"price": price} for price in sorted(wanted_overage - kept)]
    return items


def _schedule_items(terms: Terms, prices: _Prices) -> list[dict[str, Any]]:
    keys = [terms.lookup_key, *terms.overage_lookup_keys.values()]
    ids = prices.of(keys)
    return [
        {"price": ids[terms.lookup_key], "quantity": terms.quantity},
        *({"price": ids[key]} for key in terms.overage_lookup_keys.values()),
    ]


def _move(
    gateway: StripeGateway,
    catalog: Catalog,
    migration: Any,
    line: Any,
    prices: _Prices,
) -> str:
    """Move one subscriber; return its status (done or skipped)."""
    if line.stripe_account:
        gateway = gateway.for_account(line.stripe_account)
    raw = gateway.retrieve_subscription(line.subscription_id)
    current = subscription_snapshot(raw)
    if current.status in ENDED_STATUSES or current.plan != migration.plan:
        return "skipped"
    if current.plan_version == migration.to_version:
        return "done"  # moved already (an earlier run's write whose mark was lost)
    if current.plan_version != migration.from_version:
        return "skipped"
    at_version = catalog.with_plan_version(migration.plan, migration.to_version)
    terms = subscription_terms(
        at_version,
        plan_id=migration.plan,
        interval=current.interval or "",
        currency=current.currency or "",
        seats=current.seats if at_version.plans[migration.plan].per_seat else None,
    )
    key = f"plan-migrate-{migration.id}-{line.customer_id}"
    if migration.at == "now":
        gateway.update_subscription(
            current.id,
            idempotency_key=key,
            params={
                "items": _new_items(current, terms, prices),
                "proration_behavior": migration.proration,
            },
        )
        return "done"
    scheduled = gateway.schedule_subscription_change(
        current.id,
        schedule_id=object_id(raw.get("schedule")),
        idempotency_key=key,
        items=_schedule_items(terms, prices),
        interval=terms.interval,
        proration_behavior=migration.proration,
        metadata={"tollgate_plan_migration": migration.id},
    )
    if scheduled is None:
        raise InvalidRequest("the subscription has a schedule of its own", param="customers")
    return "done"


def run_plan_migration(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    clock: Clock,
    migration_id: str,
    batch: int = 500,
    concurrency: int = 4,
    commit_every: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationView:
    """Move the migration's pending subscribers; safe to run again (it resumes)."""
    with db.transaction() as session:
        connection = session.connection()
        migration = queries.migration(connection, migration_id)
        if migration is None:
            raise NotFound(f"no plan migration {migration_id!r}", param="migration")
        queries.retry_failed_customers(connection, migration_id, clock.now())
        if migration.status != "running":
            queries.set_migration_status(connection, migration_id, "running", clock.now())
        counts = queries.status_counts(connection, migration_id)
    total = sum(counts.values())
    done = total - counts.get("pending", 0)
    prices = _Prices(gateway)

    def move(line: Any) -> tuple[Any, str, str | None]:
        try:
            return line, _move(gateway, catalog, migration, line, prices), None
        except (StripeFailure, InvalidRequest) as failure:
            error = str(failure)[:500]
            log.warning("plan migration %s: %s failed: %s", migration_id, line.customer_id, error)
            return line, "failed", error

    # Subscribers move `concurrency` at a time (Stripe calls wait on the network), and their
    # progress rows commit per group of `commit_every`: a run killed in between loses at most
    # those marks, and the resumed run finds those subscribers on the new version already
    # (or gets Stripe's stored answer to the same idempotency key): nobody changes twice.
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="tollgate-migrate") as pool:
        while True:
            with db.engine.connect() as connection:
                lines = queries.pending_customers(connection, migration_id, batch)
                connection.rollback()
            if not lines:
                break
            for start in range(0, len(lines), commit_every):
                results = list(pool.map(move, lines[start : start + commit_every]))
                with db.transaction() as session:
                    for line, status, error in results:
                        queries.finish_customer(
                            session.connection(),
                            migration_id,
                            line.customer_id,
                            status=status,
                            error=error,
                            now=clock.now(),
                        )
                    # A live run keeps its migration fresh (the worker resumes stale ones).
                    queries.set_migration_status(
                        session.connection(), migration_id, "running", clock.now()
                    )
                done += len(results)
                if progress is not None:
                    progress(done, total)
            if len(lines) < batch:
                break
    with db.transaction() as session:
        connection = session.connection()
        counts = queries.status_counts(connection, migration_id)
        final = "failed" if counts.get("failed") else "done"
        queries.set_migration_status(connection, migration_id, final, clock.now())
        record_audit(
            connection,
            actor="tollgate",
            object_type="plan_migration",
            object_id=migration_id,
            action=final,
            before=None,
            after=counts,
            now=clock.now(),
        )
    return get_plan_migration(db=db, migration_id=migration_id)


def resume_plan_migrations(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    clock: Clock,
    stale_after: timedelta = timedelta(minutes=2),
) -> dict[str, int]:
    """Finish migrations whose run stopped (a process that died): running, untouched lately."""
    with db.engine.connect() as connection:
        stalled = queries.stalled_migrations(connection, clock.now() - stale_after)
        connection.rollback()
    report = {"resumed": 0, "done": 0, "failed": 0}
    for migration_id in stalled:
        finished = run_plan_migration(
            db=db, catalog=catalog, gateway=gateway, clock=clock, migration_id=migration_id
        )
        report["resumed"] += 1
        report["done" if finished.status == "done" else "failed"] += 1
    return report
