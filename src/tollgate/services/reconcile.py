"""Reconcile the mirror with Stripe: report every drift, heal what Stripe is the record for.

`reconcile` pages through what Stripe made in a window (subscriptions, invoices, charges,
refunds, disputes; `created` filters, pages of 100, the next page read by a thread while this one
is checked, so at most two are in memory), compares each object with its mirror row (see
tollgate.domain.reconcile) and stores every drift in the run's report.

A drift Stripe is the record for is healed through the webhook path, not beside it: Tollgate
builds the event Stripe sends for the object in its current state (id
`reconcile:<run>:<object id>`, `tollgate_actor` `reconcile:<run>`), and
`services.webhooks.apply_built_events` stores it in the inbox and applies it with the webhook
handlers. So watermarks, audit rows, `state_version` bumps, the change feed and notifications
happen exactly as for a delivered event. A page's events are applied many to a transaction
(the listed object is the current state: nothing is fetched again, and customers seen for the
first time are read before the transaction). An event that fails is applied alone and kept
failed, with its error, for the webhook retry job; it fails no other. Local objects made in the
window that Stripe did not list are looked up one by one; those Stripe does not have are
reported, never deleted.

Two checks report without healing, because Tollgate is the record there: the overage sent to
each billing meter per customer and period against Stripe's meter event summaries
(`usage_differs`), and the credit ledger's own check (`ledger_unbalanced`). When nothing
drifted, nothing is written but the report.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from sqlalchemy import Select, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tollgate.clock import Clock
from tollgate.db.queries.billing import customers_with_cash
from tollgate.db.tables import (
    CHARGES,
    CUSTOMERS,
    DISPUTES,
    INVOICES,
    METER_OUTBOX,
    RECONCILIATION_DRIFTS,
    RECONCILIATION_RUNS,
    REFUNDS,
    SUBSCRIPTIONS,
)
from tollgate.db.types import UTCDateTime
from tollgate.db.unit_of_work import Database
from tollgate.domain.dunning import DunningPolicy
from tollgate.domain.errors import InvalidRequest, TollgateError
from tollgate.domain.reconcile import (
    COMPARED,
    METER_SETTLE,
    OBJECT_TYPES,
    Drift,
    DriftKind,
    compare_cash_balance,
    compare_object,
    compare_usage,
    heal_event_created,
    heal_event_type,
    is_account_id,
    ledger_drift,
    meter_event_moment,
    minute_window,
    object_type_of,
    stripe_object_time,
)
from tollgate.metrics import (
    RECONCILE_DRIFTS,
    RECONCILE_HEALED,
    RECONCILE_LAST_DRIFTS,
    RECONCILE_LAST_SUCCESS,
    RECONCILE_RUNS,
)
from tollgate.services.credit_ledger import ledger_problems
from tollgate.services.deps import Deps
from tollgate.services.meter_usage import GROUP_EVENT_COLUMNS
from tollgate.services.webhooks import apply_built_events, describe_error
from tollgate.stripe.errors import StripeFailure, StripeNotFound, StripeUnavailable
from tollgate.stripe.gateway import PINNED_API_VERSION, StripeGateway
from tollgate.stripe.translate import (
    charge_snapshot,
    dispute_snapshot,
    invoice_snapshot,
    refund_snapshot,
    subscription_snapshot,
)
from tollgate.stripe.translate import object_id as stripe_id_of

log = logging.getLogger("tollgate.reconcile")

TABLES: dict[str, Table] = {
    "subscription": SUBSCRIPTIONS,
    "invoice": INVOICES,
    "charge": CHARGES,
    "refund": REFUNDS,
    "dispute": DISPUTES,
}
SNAPSHOTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "subscription": subscription_snapshot,
    "invoice": invoice_snapshot,
    "charge": charge_snapshot,
    "refund": refund_snapshot,
    "dispute": dispute_snapshot,
}
PAGE_SIZE = 100
# Customers seen for the first time read from Stripe at once, before a page is healed.
CUSTOMER_READERS = 4


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
    # A run of one object (`recheck_object`): its type and id; None for a run over a window.
    object_type: str | None = None
    object_id: str | None = None

    @property
    def drifts(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "trigger": self.trigger,
            "status": self.status,
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "checked": self.checked,
            "drifts": self.drifts,
            "counts": self.counts,
            "healed": self.healed,
            "error": self.error,
            "object": (
                {"type": self.object_type, "id": self.object_id} if self.object_id else None
            ),
        }


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

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "stripe_account": self.stripe_account,
            "local": self.local,
            "stripe": self.stripe,
            "healed": self.healed,
        }


@dataclass
class _Run:
    """What one run carries from page to page: counts only, never the objects."""

    db: Database
    gateway: StripeGateway
    dunning: DunningPolicy
    clock: Clock
    run_id: int
    since: datetime
    account: str | None = None
    checked: int = 0
    healed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # connected accounts Stripe refused

    @property
    def target(self) -> StripeGateway:
        return self.gateway.for_account(self.account) if self.account else self.gateway


class ReconcileDeps(Deps, Protocol):
    """What a run works with: the use cases' deps and the Stripe gateway it cannot run
    without (the container raises ConfigError when no STRIPE_SECRET_KEY is set)."""

    @property
    def stripe(self) -> StripeGateway: ...


def run_reconcile(
    deps: ReconcileDeps,
    *,
    since: datetime,
    trigger: str,
    scheduled_for: datetime | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ReconcileReport:
    """`reconcile` on the deps' database, Stripe gateway, dunning policy and clock."""
    db, gateway, dunning, clock = deps.db, deps.stripe, deps.dunning_policy, deps.clock
    return reconcile(
        db=db,
        gateway=gateway,
        dunning=dunning,
        clock=clock,
        since=since,
        trigger=trigger,
        scheduled_for=scheduled_for,
        progress=progress,
    )


def reconcile(
    *,
    db: Database,
    gateway: StripeGateway,
    dunning: DunningPolicy,
    clock: Clock,
    since: datetime,
    trigger: str = "cli",
    scheduled_for: datetime | None = None,
    page_size: int = PAGE_SIZE,
    progress: Callable[[str, int], None] | None = None,
) -> ReconcileReport:
    """Compare what Stripe made since `since` with the mirror; store and return the report.

    `scheduled_for` claims a nightly slot: a second run for the same slot raises
    AlreadyReconciled, on every replica, before it calls Stripe. `progress` is told, after each
    page, the kind of object being compared and how many objects were checked so far.
    """
    started = clock.now()
    run = _Run(
        db,
        gateway,
        dunning,
        clock,
        _start_run(db, trigger, scheduled_for, since, started),
        since,
    )
    try:
        for account in (None, *connected_accounts(db)):
            run.account = account
            with _isolated(run, account):
                _reconcile_account(run, since, page_size, progress)
        _check_usage(run)
        _check_cash_balances(run)
        _check_ledger(run)
    except Exception as error:
        _finish_run(run, "failed", describe_error(error))
        raise
    return _finish_run(run, "succeeded", None)


def recheck_object(
    deps: ReconcileDeps,
    *,
    object_id: str,
    object_type: str | None = None,
    account: str | None = None,
    trigger: str = "console",
) -> ReconcileReport:
    """Compare one object with Stripe as it is now, and heal it where Stripe is the record: a
    run of its own, stored and reported as any run (a drift checked again, without reading a
    whole window again).

    `object_type` defaults to the one the id's prefix names; `account` is the connected
    account the object lives in (None: the platform's).
    """
    named = object_type_of(object_id)
    object_type = object_type or named
    if named is None or object_type not in OBJECT_TYPES:
        raise InvalidRequest(
            f"{object_id[:80]!r} is not an object reconciliation compares (one of: "
            f"{', '.join(OBJECT_TYPES)}; give its Stripe id, e.g. sub_…)",
            param="object",
        )
    if account is not None and not is_account_id(account):
        raise InvalidRequest(
            f"{account[:80]!r} is not a connected account's id (acct_…)", param="account"
        )
    now = deps.clock.now()
    run = _Run(
        deps.db,
        deps.stripe,
        deps.dunning_policy,
        deps.clock,
        _start_run(deps.db, trigger, None, now, now, object_type=object_type, object_id=object_id),
        now,
        account=account,
    )
    try:
        with _isolated(run, account):
            try:
                found = run.target.retrieve_object(object_type, object_id)
            except StripeNotFound:
                _record_missing_in_stripe(run, object_type, [object_id])
            else:
                _reconcile_page(run, object_type, [found])
    except Exception as error:
        _finish_run(run, "failed", describe_error(error), whole=False)
        raise
    return _finish_run(run, "succeeded", None, whole=False)


def _reconcile_account(
    run: _Run, since: datetime, page_size: int, progress: Callable[[str, int], None] | None
) -> None:
    for object_type in OBJECT_TYPES:
        seen: set[str] = set()
        pages = run.target.list_created_since(
            object_type, int(since.timestamp()), page_size=page_size
        )
        for page in _read_ahead(pages):
            seen.update(str(obj["id"]) for obj in page)
            _reconcile_page(run, object_type, page)
            if progress is not None:
                progress(object_type, run.checked)
        _look_up_unlisted(run, object_type, seen, page_size)


@contextmanager
def skipping_refused_account(
    account: str | None, skip: Callable[[str, StripeFailure], None]
) -> Iterator[None]:
    """Run one account's part of a job; if Stripe refuses that connected account alone, hand
    it and the error to `skip`, and the job goes on with the other accounts.

    Only a connected account can be refused alone: the platform's own refusal, and Stripe not
    answering, concern every account, so they stop the job as before.
    """
    try:
        yield
    except StripeFailure as error:
        if account is None or isinstance(error, StripeUnavailable):
            raise
        skip(account, error)


def _isolated(run: _Run, account: str | None) -> AbstractContextManager[None]:
    """Report and skip a connected account Stripe refuses; the run goes on with the others."""

    def skip(account: str, error: StripeFailure) -> None:
        run.refused.add(account)
        log.warning("reconciliation skipped connected account %s: %s", account, error.message)
        refusal = Drift(
            DriftKind.ACCOUNT_REFUSED, "account", account, None, {"error": error.message[:500]}
        )
        _record(run, [(refusal, False)])

    return skipping_refused_account(account, skip)


def _read_ahead(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """Yield Stripe's pages while a thread asks for the next one, so the two waits overlap.

    One page waits at most, besides the one being reconciled: memory stays flat. An error
    reading a page is raised here, where that page would have been.
    """
    waiting: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        """Queue what was read; False once the reconciliation stopped taking pages."""
        while not stop.is_set():
            try:
                waiting.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not hand_over("page", page):
                    return
            hand_over("end", None)
        except BaseException as error:  # handed to the reconciling thread, raised there
            hand_over("error", error)

    reader = threading.Thread(target=read, name="reconcile-pages", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = waiting.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        reader.join()


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
            "created": heal_event_created(now, watermark, stripe_object_time(obj)),
            "api_version": PINNED_API_VERSION,
            "livemode": bool(obj.get("livemode")),
            "data": {"object": obj},
            "tollgate_actor": actor,
        }
        if run.account:
            event["account"] = run.account
        events.append(event)
    fetched = _first_seen_customers(run, [obj for obj, _ in drifted])

    # The page's events go in as few transactions as they can (one thread: on PostgreSQL, four
    # threads split by customer were slower, fighting over the interpreter's lock); one that
    # fails stays stored, failed, for the webhook retry job.
    results = apply_built_events(
        db=run.db,
        gateway=run.gateway,
        events=events,
        clock=run.clock,
        dunning=run.dunning,
        fetched=fetched,
    )
    for result in results:
        if result.failed:
            log.warning("reconcile could not apply %s: %s", result.event_id, result.error)
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


def _first_seen_customers(run: _Run, objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Fetch the customers of these objects the mirror lacks, keyed as the handlers ask for them.

    A handler that meets a customer for the first time asks for it from Stripe, which ends its
    page's transaction early; reading them all before the transaction keeps it whole.
    """
    stripe_ids = {stripe_id_of(obj.get("customer")) for obj in objects} - {None}
    if not stripe_ids:
        return {}
    with run.db.engine.connect() as connection:
        known = set(
            connection.execute(
                select(CUSTOMERS.c.stripe_customer_id).where(
                    CUSTOMERS.c.stripe_customer_id.in_(stripe_ids)
                )
            ).scalars()
        )
    target = run.target

    def read(stripe_id: str) -> tuple[tuple[str, str], Any] | None:
        try:
            return ("customer", stripe_id), target.retrieve_customer(stripe_id)
        except StripeNotFound:
            return ("customer", stripe_id), None
        except StripeFailure as error:
            # Left out: the handler asks for it again, and its event keeps the error if it fails.
            log.warning("reconcile could not read customer %s: %s", stripe_id, error)
            return None

    missing = sorted(str(stripe_id) for stripe_id in stripe_ids - known)
    if len(missing) < 2:
        return dict(found for found in map(read, missing) if found)
    # A few at once: each is a round trip to Stripe, and test mode allows 25 requests a second.
    with ThreadPoolExecutor(CUSTOMER_READERS, thread_name_prefix="reconcile-customers") as pool:
        return dict(found for found in pool.map(read, missing) if found)


def _record(run: _Run, drifts: list[tuple[Drift, bool]]) -> None:
    """Store a page's drifts in the report and count them."""
    with run.db.write_connection() as connection:
        connection.execute(
            insert(RECONCILIATION_DRIFTS),
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
            _record_missing_in_stripe(run, object_type, unknown)


def _record_missing_in_stripe(run: _Run, object_type: str, unknown: list[str]) -> None:
    """Compare objects Stripe answered 404 for with their mirror rows; record, never delete."""
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


def connected_accounts(db: Database) -> list[str]:
    """Return the connected accounts the mirror's customers live in."""
    with db.engine.connect() as connection:
        return list(
            connection.execute(
                select(CUSTOMERS.c.stripe_account)
                .where(CUSTOMERS.c.stripe_account.is_not(None))
                .distinct()
                .order_by(CUSTOMERS.c.stripe_account)
            ).scalars()
        )


# -- usage reported to meters, and the credit ledger (reported, never healed) -----------------


def _check_usage(run: _Run) -> None:
    """Compare the overage Tollgate sent for each customer, meter and period with Stripe's meter.

    Periods that ended before the window are not looked at again. Only overage already sent
    counts; a period with some in flight (claimed, or sent too recently for Stripe to have
    aggregated it) is left for the next run.
    """
    now = run.clock.now()
    meters: dict[str | None, dict[str, str]] = {}
    for period in _sent_periods(run):
        account = period.stripe_account
        target = run.gateway.for_account(account) if account else run.gateway
        window = minute_window(period.period_start, period.period_end)
        sent = _sent_in(run.db, period, window, settled_before=now - METER_SETTLE)
        if sent is None or account in run.refused:
            continue
        aggregated = Decimal(0)
        meter_id: str | None = None
        run.account = account
        with _isolated(run, account):
            if account not in meters:
                meters[account] = target.meter_ids()
            meter_id = meters[account].get(period.event_name)
            if meter_id is not None:
                aggregated = target.meter_usage(
                    meter_id,
                    period.stripe_customer_id,
                    int(window[0].timestamp()),
                    int(window[1].timestamp()),
                )
        if account in run.refused:
            continue
        run.checked += 1
        object_id = (
            f"{period.customer_id}:{period.feature}:{period.period_start:%Y-%m-%dT%H:%M:%SZ}"
        )
        drift = compare_usage(
            object_id,
            feature=period.feature,
            window=window,
            sent=sent,
            meter_id=meter_id,
            aggregated=aggregated,
        )
        if drift is not None:
            run.account = account
            _record(run, [(drift, False)])
    run.account = None


def _sent_periods(run: _Run) -> list[Any]:
    """Each customer's meter period, ending in the window or later, with overage sent."""
    with run.db.engine.connect() as connection:
        return list(
            connection.execute(
                select(
                    METER_OUTBOX.c.stripe_account,
                    METER_OUTBOX.c.customer_id,
                    METER_OUTBOX.c.stripe_customer_id,
                    METER_OUTBOX.c.feature,
                    METER_OUTBOX.c.event_name,
                    METER_OUTBOX.c.period_start,
                    METER_OUTBOX.c.period_end,
                )
                .where(METER_OUTBOX.c.status == "sent", METER_OUTBOX.c.period_end > run.since)
                .distinct()
                .order_by(
                    METER_OUTBOX.c.customer_id, METER_OUTBOX.c.feature, METER_OUTBOX.c.period_start
                )
            )
        )


def _sent_in(
    db: Database, period: Any, window: tuple[datetime, datetime], *, settled_before: datetime
) -> int | None:
    """Return the overage sent with a timestamp in the window, or None if some is in flight.

    Each group of outbox rows went to Stripe as one event, timestamped as meter_usage does.
    """
    start, end = window
    with db.engine.connect() as connection:
        groups = connection.execute(
            select(
                METER_OUTBOX.c.status,
                *GROUP_EVENT_COLUMNS,
                func.max(METER_OUTBOX.c.sent_at, type_=UTCDateTime()).label("sent_at"),
            )
            .where(
                METER_OUTBOX.c.stripe_customer_id == period.stripe_customer_id,
                METER_OUTBOX.c.event_name == period.event_name,
                METER_OUTBOX.c.status.in_(("claimed", "sent")),
                METER_OUTBOX.c.period_start < end,
                METER_OUTBOX.c.period_end > start,
            )
            .group_by(METER_OUTBOX.c.identifier, METER_OUTBOX.c.status)
        ).all()
    sent = 0
    for group in groups:
        moment = meter_event_moment(group.occurred_at, group.period_start, group.period_end)
        if not start <= moment < end:
            continue
        if group.status != "sent" or group.sent_at is None or group.sent_at > settled_before:
            return None
        sent += int(group.value)
    return sent


def _check_cash_balances(run: _Run) -> None:
    """Compare each bank-transfer customer's mirrored cash balance with Stripe's."""
    with run.db.engine.connect() as connection:
        customers = customers_with_cash(connection)
    for customer in customers:
        account = customer.stripe_account
        if account in run.refused:
            continue
        run.account = account
        available: dict[str, int] | None = None
        with _isolated(run, account):
            found = run.target.retrieve_cash_balance(customer.stripe_customer_id)
            available = {
                str(currency): int(amount)
                for currency, amount in (found.get("available") or {}).items()
            }
        if available is None:
            continue
        run.checked += 1
        drift = compare_cash_balance(customer.id, local=customer.cash_balance, stripe=available)
        if drift is not None:
            _record(run, [(drift, False)])
    run.account = None


def _check_ledger(run: _Run) -> None:
    """Report each problem the credit ledger's own check finds."""
    with run.db.engine.connect() as connection:
        problems = ledger_problems(connection)
    if problems:
        run.account = None
        _record(run, [(ledger_drift(problem), False) for problem in problems])


# -- the stored report -------------------------------------------------------------------------


def _start_run(
    db: Database,
    trigger: str,
    scheduled_for: datetime | None,
    since: datetime,
    now: datetime,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
) -> int:
    try:
        with db.write_connection() as connection:
            return int(
                connection.execute(
                    insert(RECONCILIATION_RUNS)
                    .values(
                        trigger=trigger,
                        object_type=object_type,
                        object_id=object_id,
                        scheduled_for=scheduled_for,
                        window_start=since,
                        window_end=now,
                        started_at=now,
                        status="running",
                        checked=0,
                        counts={},
                        healed=0,
                    )
                    .returning(RECONCILIATION_RUNS.c.id)
                ).scalar_one()
            )
    except IntegrityError:
        raise AlreadyReconciled(f"the reconciliation scheduled for {scheduled_for} ran") from None


def _finish_run(
    run: _Run, status: str, error: str | None, *, whole: bool = True
) -> ReconcileReport:
    """Store how the run ended. Only a `whole` run (over a window, not one object) sets the
    gauges of the last run, which the alerts read."""
    finished = run.clock.now()
    counts = {str(kind): count for kind, count in sorted(run.counts.items())}
    with run.db.write_connection() as connection:
        connection.execute(
            update(RECONCILIATION_RUNS)
            .where(RECONCILIATION_RUNS.c.id == run.run_id)
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
    if status == "succeeded" and whole:
        for kind in DriftKind:
            RECONCILE_LAST_DRIFTS.labels(str(kind)).set(counts.get(kind, 0))
        RECONCILE_LAST_SUCCESS.set(report.started_at.timestamp())
    return report


def get_reconciliation(*, db: Database, run_id: int) -> ReconcileReport:
    """Return one stored run."""
    with db.engine.connect() as connection:
        row = (
            connection.execute(
                select(RECONCILIATION_RUNS).where(RECONCILIATION_RUNS.c.id == run_id)
            )
            .mappings()
            .one()
        )
    return report_of(row)


def report_of(row: Mapping[Any, Any]) -> ReconcileReport:
    """The report of a stored `reconciliation_runs` row."""
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
        object_type=row["object_type"],
        object_id=row["object_id"],
    )


def list_drifts(*, db: Database, run_id: int, limit: int | None = None) -> Iterator[DriftRecord]:
    """Stream a run's drifts in the order they were found."""
    query = (
        select(RECONCILIATION_DRIFTS)
        .where(RECONCILIATION_DRIFTS.c.run_id == run_id)
        .order_by(RECONCILIATION_DRIFTS.c.id)
    )
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
                select(RECONCILIATION_RUNS.c.id).where(
                    RECONCILIATION_RUNS.c.scheduled_for == scheduled_for
                )
            ).first()
            is not None
        )


def last_nightly_window_end(*, db: Database) -> datetime | None:
    """Return where the last nightly run that finished stopped looking, or None."""
    with db.engine.connect() as connection:
        return connection.execute(
            select(RECONCILIATION_RUNS.c.window_end)
            .where(
                RECONCILIATION_RUNS.c.trigger == "nightly",
                RECONCILIATION_RUNS.c.status == "succeeded",
            )
            .order_by(RECONCILIATION_RUNS.c.window_end.desc())
            .limit(1)
        ).scalar()
