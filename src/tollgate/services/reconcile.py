"""Reconcile the mirror with Stripe: report every drift, heal what Stripe is the record for.

`reconcile` pages through what Stripe made in a window (subscriptions, invoices, charges,
refunds, disputes; `created` filters, one page of 100 in memory at a time), compares each object
with its mirror row (see tollgate.domain.reconcile) and stores every drift in the run's report.

A drift Stripe is the record for is healed through the webhook path, not beside it: Tollgate
builds the event Stripe sends for the object in its current state (id
`reconcile:<run>:<object id>`, `tollgate_actor` `reconcile:<run>`), stores it in the inbox and
applies it with `process_stripe_event`. So watermarks, audit rows, `state_version` bumps, the
change feed and notifications happen exactly as for a delivered event, and a failure is retried
by the webhook retry job. Local objects made in the window that Stripe did not list are looked up
one by one; those Stripe does not have are reported, never deleted. When nothing drifted,
nothing is written but the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from sqlalchemy import Select, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from tollgate.clock import Clock
from tollgate.db.models import (
    Charge,
    Customer,
    Dispute,
    Invoice,
    ReconciliationDrift,
    ReconciliationRun,
    Refund,
    StripeEvent,
    Subscription,
)
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import TollgateError
from tollgate.domain.reconcile import (
    COMPARED,
    OBJECT_TYPES,
    Drift,
    DriftKind,
    compare_object,
    heal_event_created,
    heal_event_type,
)
from tollgate.metrics import (
    RECONCILE_DRIFTS,
    RECONCILE_HEALED,
    RECONCILE_LAST_DRIFTS,
    RECONCILE_LAST_SUCCESS,
    RECONCILE_RUNS,
)
from tollgate.services.webhooks import describe_error, process_stripe_event
from tollgate.stripe.errors import StripeNotFound
from tollgate.stripe.gateway import PINNED_API_VERSION, StripeGateway
from tollgate.stripe.translate import (
    charge_snapshot,
    dispute_snapshot,
    invoice_snapshot,
    refund_snapshot,
    subscription_snapshot,
)

log = logging.getLogger("tollgate.reconcile")

CHARGES: Table = Charge.__table__  # type: ignore[assignment]
CUSTOMERS: Table = Customer.__table__  # type: ignore[assignment]
DRIFTS: Table = ReconciliationDrift.__table__  # type: ignore[assignment]
EVENTS: Table = StripeEvent.__table__  # type: ignore[assignment]
RUNS: Table = ReconciliationRun.__table__  # type: ignore[assignment]
TABLES: dict[str, Table] = {
    "subscription": Subscription.__table__,  # type: ignore[dict-item]
    "invoice": Invoice.__table__,  # type: ignore[dict-item]
    "charge": CHARGES,
    "refund": Refund.__table__,  # type: ignore[dict-item]
    "dispute": Dispute.__table__,  # type: ignore[dict-item]
}
SNAPSHOTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "subscription": subscription_snapshot,
    "invoice": invoice_snapshot,
    "charge": charge_snapshot,
    "refund": refund_snapshot,
    "dispute": dispute_snapshot,
}
PAGE_SIZE = 100


class AlreadyReconciled(TollgateError):
    """Another run already took this nightly slot (another replica, or an earlier tick)."""

    type: ClassVar[str] = "already_reconciled"
    status: ClassVar[int] = 409


@dataclass(frozen=True)
class ReconcileReport:
    """One run as stored: its window, what it checked, drifts by kind, how many it healed."""

    run_id: int
    trigger: str
    status: str
    window_start: datetime
    window_end: datetime
    started_at: datetime
    finished_at: datetime | None
    checked: int
    counts: dict[str, int]
    healed: int
    error: str | None = None

    @property
    def drifts(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DriftRecord:
    """One stored drift: the object, the kind, each side's differing values, whether healed."""

    kind: str
    object_type: str
    object_id: str
    stripe_account: str | None
    local: dict[str, Any] | None
    stripe: dict[str, Any] | None
    healed: bool


@dataclass
class _Run:
    """What one run carries from page to page: counts only, never the objects."""

    db: Database
    gateway: StripeGateway
    clock: Clock
    run_id: int
    since: datetime
    account: str | None = None
    checked: int = 0
    healed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> StripeGateway:
        return self.gateway.for_account(self.account) if self.account else self.gateway


def reconcile(
    *,
    db: Database,
    gateway: StripeGateway,
    clock: Clock,
    since: datetime,
    trigger: str = "cli",
    scheduled_for: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> ReconcileReport:
    """Compare what Stripe made since `since` with the mirror; store and return the report.

    `scheduled_for` claims a nightly slot: a second run for the same slot raises
    AlreadyReconciled, on every replica, before it calls Stripe.
    """
    started = clock.now()
    run = _Run(db, gateway, clock, _start_run(db, trigger, scheduled_for, since, started), since)
    try:
        for account in (None, *_connected_accounts(db)):
            run.account = account
            for object_type in OBJECT_TYPES:
                seen: set[str] = set()
                pages = run.target.list_created_since(
                    object_type, int(since.timestamp()), page_size=page_size
                )
                for page in pages:
                    seen.update(str(obj["id"]) for obj in page)
                    _reconcile_page(run, object_type, page)
                _look_up_unlisted(run, object_type, seen, page_size)
    except Exception as error:
        _finish_run(run, "failed", describe_error(error))
        raise
    return _finish_run(run, "succeeded", None)


# -- one page --------------------------------------------------------------------------------


def _reconcile_page(run: _Run, object_type: str, objects: Sequence[dict[str, Any]]) -> None:
    """Compare a page of Stripe's objects with their mirror rows; heal and record the drifts."""
    stripe_values = {str(obj["id"]): _stripe_values(object_type, obj) for obj in objects}
    rows = _local_rows(run.db, object_type, list(stripe_values))
    found: list[tuple[Drift, dict[str, Any], Mapping[Any, Any] | None]] = []
    for obj in objects:
        object_id = str(obj["id"])
        row = rows.get(object_id)
        drift = compare_object(
            object_type,
            object_id,
            local=_local_values(object_type, row),
            stripe=stripe_values[object_id],
        )
        if drift is not None:
            found.append((drift, obj, row))
    run.checked += len(objects)
    if not found:
        return
    healed = _heal(run, object_type, [(obj, row) for drift, obj, row in found if drift.healable])
    _record(run, [(drift, drift.object_id in healed) for drift, _, _ in found])


def _stripe_values(object_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    snapshot = SNAPSHOTS[object_type](obj)
    return {name: getattr(snapshot, name) for name in COMPARED[object_type].fields}


def _local_values(object_type: str, row: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: row[name] for name in COMPARED[object_type].fields}


def _local_rows(db: Database, object_type: str, ids: list[str]) -> dict[str, Mapping[Any, Any]]:
    table = TABLES[object_type]
    with db.engine.connect() as connection:
        rows = connection.execute(select(table).where(table.c.id.in_(ids))).mappings().all()
    return {str(row["id"]): row for row in rows}


def _heal(
    run: _Run, object_type: str, drifted: list[tuple[dict[str, Any], Mapping[Any, Any] | None]]
) -> set[str]:
    """Apply Stripe's objects as the events Stripe sends; return the ids now matching Stripe."""
    if not drifted:
        return set()
    now = run.clock.now()
    actor = f"reconcile:{run.run_id}"
    events = []
    for obj, row in drifted:
        watermark = row.get("watermark_created") if row is not None else None
        event: dict[str, Any] = {
            "id": f"{actor}:{obj['id']}",
            "object": "event",
            "type": heal_event_type(object_type, _stripe_values(object_type, obj)),
            "created": heal_event_created(now, watermark),
            "api_version": PINNED_API_VERSION,
            "livemode": bool(obj.get("livemode")),
            "data": {"object": obj},
            "tollgate_actor": actor,
        }
        if run.account:
            event["account"] = run.account
        events.append(event)
    # Stored first, as a delivery is: an event that fails stays for the webhook retry job.
    with run.db.write_connection() as connection:
        connection.execute(insert(EVENTS), [_inbox_row(event, now) for event in events])
    for event in events:
        result = process_stripe_event(
            db=run.db, gateway=run.gateway, event_id=event["id"], clock=run.clock
        )
        if result.failed:
            log.warning("reconcile could not apply %s: %s", event["id"], result.error)
    ids = [str(obj["id"]) for obj, _ in drifted]
    rows = _local_rows(run.db, object_type, ids)
    return {
        str(obj["id"])
        for obj, _ in drifted
        if compare_object(
            object_type,
            str(obj["id"]),
            local=_local_values(object_type, rows.get(str(obj["id"]))),
            stripe=_stripe_values(object_type, obj),
        )
        is None
    }


def _inbox_row(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    obj = event["data"]["object"]
    return {
        "id": event["id"],
        "type": event["type"],
        "object_type": obj.get("object"),
        "object_id": obj["id"],
        "stripe_account": event.get("account"),
        "api_version": event["api_version"],
        "created": datetime.fromtimestamp(event["created"], UTC),
        "received_at": now,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "processed_at": None,
        "payload": orjson.dumps(event).decode(),
    }


def _record(run: _Run, drifts: list[tuple[Drift, bool]]) -> None:
    """Store a page's drifts in the report and count them."""
    with run.db.write_connection() as connection:
        connection.execute(
            insert(DRIFTS),
            [
                {
                    "run_id": run.run_id,
                    "kind": str(drift.kind),
                    "object_type": drift.object_type,
                    "object_id": drift.object_id,
                    "stripe_account": run.account,
                    "local": _jsonable(drift.local),
                    "stripe": _jsonable(drift.stripe),
                    "healed": healed,
                }
                for drift, healed in drifts
            ],
        )
    for drift, healed in drifts:
        run.counts[drift.kind] = run.counts.get(drift.kind, 0) + 1
        RECONCILE_DRIFTS.labels(str(drift.kind), drift.object_type).inc()
        if healed:
            run.healed += 1
            RECONCILE_HEALED.labels(drift.object_type).inc()


def _jsonable(values: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in values.items()
    }


# -- local objects Stripe did not list ---------------------------------------------------------


def _look_up_unlisted(run: _Run, object_type: str, listed: set[str], page_size: int) -> None:
    """Ask Stripe for each mirror row made in the window that its list did not return.

    A row can be missing from the list because Stripe made the object before the window (its
    event arrived late), so absence alone proves nothing: only a 404 does.
    """
    unlisted = [object_id for object_id in _local_ids(run, object_type) if object_id not in listed]
    for start in range(0, len(unlisted), page_size):
        chunk = unlisted[start : start + page_size]
        found: list[dict[str, Any]] = []
        unknown: list[str] = []
        for object_id in chunk:
            try:
                found.append(run.target.retrieve_object(object_type, object_id))
            except StripeNotFound:
                unknown.append(object_id)
        if found:
            _reconcile_page(run, object_type, found)
        if unknown:
            rows = _local_rows(run.db, object_type, unknown)
            drifts = [
                compare_object(
                    object_type,
                    object_id,
                    local=_local_values(object_type, rows.get(object_id)),
                    stripe=None,
                )
                for object_id in unknown
            ]
            run.checked += len(unknown)
            _record(run, [(drift, False) for drift in drifts if drift is not None])


def _local_ids(run: _Run, object_type: str) -> Iterator[str]:
    """Stream the ids of the mirror's objects of this account made in the window."""
    with run.db.engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=1000).execute(
            _local_in_window(object_type, run.account, run.since)
        )
        for object_id in result.scalars():
            yield str(object_id)


def _local_in_window(object_type: str, account: str | None, since: datetime) -> Select[Any]:
    table = TABLES[object_type]
    query = select(table.c.id).where(table.c.created_at >= since)
    if object_type in ("refund", "dispute"):
        query = query.outerjoin(CHARGES, CHARGES.c.id == table.c.charge_id)
        owner = CHARGES.c.customer_id
    else:
        owner = table.c.customer_id
    query = query.outerjoin(CUSTOMERS, CUSTOMERS.c.id == owner)
    on_account = (
        CUSTOMERS.c.stripe_account.is_(None)
        if account is None
        else CUSTOMERS.c.stripe_account == account
    )
    return query.where(on_account).order_by(table.c.id)


def _connected_accounts(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return list(
            connection.execute(
                select(CUSTOMERS.c.stripe_account)
                .where(CUSTOMERS.c.stripe_account.is_not(None))
                .distinct()
                .order_by(CUSTOMERS.c.stripe_account)
            ).scalars()
        )


# -- the stored report -------------------------------------------------------------------------


def _start_run(
    db: Database, trigger: str, scheduled_for: datetime | None, since: datetime, now: datetime
) -> int:
    try:
        with db.write_connection() as connection:
            return int(
                connection.execute(
                    insert(RUNS)
                    .values(
                        trigger=trigger,
                        scheduled_for=scheduled_for,
                        window_start=since,
                        window_end=now,
                        started_at=now,
                        status="running",
                        checked=0,
                        counts={},
                        healed=0,
                    )
                    .returning(RUNS.c.id)
                ).scalar_one()
            )
    except IntegrityError:
        raise AlreadyReconciled(f"the reconciliation scheduled for {scheduled_for} ran") from None


def _finish_run(run: _Run, status: str, error: str | None) -> ReconcileReport:
    finished = run.clock.now()
    counts = {str(kind): count for kind, count in sorted(run.counts.items())}
    with run.db.write_connection() as connection:
        connection.execute(
            update(RUNS)
            .where(RUNS.c.id == run.run_id)
            .values(
                status=status,
                finished_at=finished,
                checked=run.checked,
                counts=counts,
                healed=run.healed,
                error=error,
            )
        )
    report = get_reconciliation(db=run.db, run_id=run.run_id)
    RECONCILE_RUNS.labels(status).inc()
    if status == "succeeded":
        for kind in DriftKind:
            RECONCILE_LAST_DRIFTS.labels(str(kind)).set(counts.get(kind, 0))
        RECONCILE_LAST_SUCCESS.set(report.started_at.timestamp())
    return report


def get_reconciliation(*, db: Database, run_id: int) -> ReconcileReport:
    """Return one stored run."""
    with db.engine.connect() as connection:
        row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).mappings().one()
    return _report(row)


def _report(row: Mapping[Any, Any]) -> ReconcileReport:
    return ReconcileReport(
        run_id=int(row["id"]),
        trigger=row["trigger"],
        status=row["status"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        checked=int(row["checked"]),
        counts={str(kind): int(count) for kind, count in (row["counts"] or {}).items()},
        healed=int(row["healed"]),
        error=row["error"],
    )


def list_drifts(*, db: Database, run_id: int, limit: int | None = None) -> Iterator[DriftRecord]:
    """Stream a run's drifts in the order they were found."""
    query = select(DRIFTS).where(DRIFTS.c.run_id == run_id).order_by(DRIFTS.c.id)
    if limit is not None:
        query = query.limit(limit)
    with db.engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
        for row in result.mappings():
            yield DriftRecord(
                kind=row["kind"],
                object_type=row["object_type"],
                object_id=row["object_id"],
                stripe_account=row["stripe_account"],
                local=row["local"],
                stripe=row["stripe"],
                healed=bool(row["healed"]),
            )


def nightly_run_taken(*, db: Database, scheduled_for: datetime) -> bool:
    """Return whether a run already took this nightly slot."""
    with db.engine.connect() as connection:
        return (
            connection.execute(
                select(RUNS.c.id).where(RUNS.c.scheduled_for == scheduled_for)
            ).first()
            is not None
        )


def last_nightly_window_end(*, db: Database) -> datetime | None:
    """Return where the last nightly run that finished stopped looking, or None."""
    with db.engine.connect() as connection:
        return connection.execute(
            select(RUNS.c.window_end)
            .where(RUNS.c.trigger == "nightly", RUNS.c.status == "succeeded")
            .order_by(RUNS.c.window_end.desc())
            .limit(1)
        ).scalar()
