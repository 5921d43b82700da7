"""What the operator console (and its JSON) shows: customers, a customer's timeline, the
overview's figures, Stripe events, the outbox, reconciliation runs, API keys and fees."""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries import console as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.fees import FeeSchedule, method_label, monthly_amount
from tollgate.domain.subscriptions import customer_plan
from tollgate.services.api_keys import ApiKeyAuthenticator
from tollgate.services.deps import Deps
from tollgate.services.reconcile import ReconcileReport, report_of
from tollgate.services.webhooks.inbox import STATUSES as EVENT_STATUSES
from tollgate.services.webhooks.inbox import StoredEvent, stored_events

CUSTOMER_STATUSES = (
    "paying",
    "trialing",
    "active",
    "canceling",
    "past_due",
    "unpaid",
    "incomplete",
    "paused",
    "canceled",
    "none",
)
OUTBOX_KINDS = ("email", "app_webhook", "usage")
OUTBOX_STATUSES = ("pending", "claimed", "sent", "delivered", "skipped", "failed")
MAX_PAGE = 200


# -- cursors -----------------------------------------------------------------------------------


def encode_cursor(*values: Any) -> str:
    """Return an opaque cursor holding `values` (datetimes as ISO strings)."""
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """Return the values in a cursor, or raise InvalidRequest naming `cursor`."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidRequest("cursor is not one this API gave", param="cursor")
    return values


def _time(value: Any, param: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidRequest(f"{param} must be an ISO 8601 time", param=param) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}", param="limit")
    return limit


def _one_of(value: str | None, allowed: Sequence[str], param: str) -> None:
    """Refuse a filter that is given and not one of `allowed`."""
    if value and value not in allowed:
        raise InvalidRequest(f"{param} must be one of {', '.join(allowed)}", param=param)


def _time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The (time, id) a newest-first list's cursor points after; None without a cursor."""
    if not cursor:
        return None
    at, last_id = decode_cursor(cursor, 2)
    return _time(at, "cursor"), str(last_id)


# -- customers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRow:
    """One customer in a list: who, on what, in what state."""

    id: str
    email: str | None
    name: str | None
    stripe_customer_id: str | None
    offline: bool
    currency: str
    plan: str | None
    status: str
    created: datetime
    trial_end: datetime | None
    current_period_end: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "stripe_customer_id": self.stripe_customer_id,
            "offline": self.offline,
            "currency": self.currency,
            "plan": self.plan,
            "status": self.status,
            "created": self.created.isoformat(),
            "trial_end": self.trial_end.isoformat() if self.trial_end else None,
            "current_period_end": (
                self.current_period_end.isoformat() if self.current_period_end else None
            ),
        }


@dataclass(frozen=True)
class Page:
    """Some items and the cursor of the next page (None on the last)."""

    items: list[Any]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "data": [item.to_json() for item in self.items],
            "next_cursor": self.next_cursor,
            "has_more": self.next_cursor is not None,
        }


def _page(
    rows: Sequence[Any],
    limit: int,
    item: Callable[[Any], Any],
    key: Callable[[Any], Sequence[Any]],
) -> Page:
    """Return the first `limit` of `rows` as a page of items; `rows` were read `limit + 1` at
    most, so one more means a next page, after the `key` of the last row kept."""
    more = len(rows) > limit
    return Page(
        [item(row) for row in rows[:limit]], encode_cursor(*key(rows[limit - 1])) if more else None
    )


@dataclass(frozen=True)
class CustomerQuery:
    """What an operator looks for in the customer list."""

    search: str | None = None
    plan: str | None = None
    status: str | None = None
    currency: str | None = None
    offline: bool | None = None
    over_percent: int | None = None
    trial_ends_within_days: int | None = None  # trials ending from now to this many days on
    created_since: datetime | None = None
    ended_since: datetime | None = None  # subscriptions ended (canceled) since
    sort: str = "created"
    order: str = "desc"


def list_customers(
    deps: Deps,
    *,
    query: CustomerQuery,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Return a page of customers matching `query`, sorted, after `cursor`."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    limit = _limit(limit)
    if query.sort not in queries.SORTS:
        raise InvalidRequest(f"sort must be one of {', '.join(queries.SORTS)}", param="sort")
    if query.order not in ("asc", "desc"):
        raise InvalidRequest("order must be asc or desc", param="order")
    _one_of(query.status, CUSTOMER_STATUSES, "status")
    if query.plan and query.plan not in catalog.plans:
        raise InvalidRequest(f"no plan {query.plan!r} in the catalog", param="plan")
    if query.over_percent is not None and not 1 <= query.over_percent <= 1000:
        raise InvalidRequest("over must be a percentage from 1 to 1000", param="over")
    if query.trial_ends_within_days is not None and not 1 <= query.trial_ends_within_days <= 366:
        raise InvalidRequest(
            "trial_ends must be a number of days from 1 to 366", param="trial_ends"
        )
    if query.search is not None and len(query.search) > 320:
        raise InvalidRequest("q must be at most 320 characters", param="q")
    after = None
    if cursor:
        value, last_id = decode_cursor(cursor, 2)
        if query.sort == "created" and value is not None:
            value = _time(value, "cursor")
        after = (value, str(last_id))
    now = clock.now()
    with db.engine.connect() as connection:
        rows = queries.customers_page(
            connection,
            search=query.search or None,
            plan=query.plan,
            status=query.status,
            currency=query.currency.lower() if query.currency else None,
            offline=query.offline,
            over_percent=query.over_percent,
            trial_ends_before=(
                now + timedelta(days=query.trial_ends_within_days)
                if query.trial_ends_within_days
                else None
            ),
            created_since=_utc(query.created_since),
            ended_since=_utc(query.ended_since),
            sort=query.sort,
            descending=query.order == "desc",
            after=after,
            limit=limit + 1,
            now=now,
            default_plan=catalog.default_plan,
            catalog_currency=catalog.currency,
        )
    column = {"created": "created_at"}.get(query.sort, query.sort)
    return _page(
        rows,
        limit,
        lambda row: _customer_row(row, catalog),
        lambda row: (row[column], row["id"]),
    )


def _customer_row(row: Mapping[Any, Any], catalog: Catalog) -> CustomerRow:
    derived = customer_plan(
        subscription_plan=row["subscription_plan"],
        subscription_status=row["subscription_status"],
        cancel_at_period_end=bool(row["cancel_at_period_end"]),
        cancel_at=row["cancel_at"],
        assigned_plan=row["assigned_plan"],
        offline=bool(row["offline"]),
        default_plan=catalog.default_plan,
    )
    status = derived.status
    if status == "none" and row["subscription_status"] in queries.ENDED:
        status = "canceled"
    return CustomerRow(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        stripe_customer_id=row["stripe_customer_id"],
        offline=bool(row["offline"]),
        currency=row["currency"],
        plan=derived.plan,
        status=status,
        created=row["created_at"],
        trial_end=row["trial_end"],
        current_period_end=row["current_period_end"],
    )


# -- a customer's timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a customer: an audit row, a Stripe event, a usage threshold
    crossed, an email or an app webhook."""

    kind: str
    at: datetime
    ref: str
    title: str
    detail: str | None
    status: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "ref": self.ref,
            "title": self.title,
            "detail": self.detail,
            "status": self.status,
        }


def customer_timeline(
    *, db: Database, customer_id: str, cursor: str | None = None, limit: int = 50
) -> Page:
    """Return a customer's timeline, newest first, after `cursor`."""
    limit = _limit(limit)
    after: tuple[datetime, str, str] | None = None
    if cursor:
        at, kind, ref = decode_cursor(cursor, 3)
        after = (_time(at, "cursor"), str(kind), str(ref))
    with db.engine.connect() as connection:
        ids = queries.customer_object_ids(connection, customer_id)
        if ids is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        rows = queries.timeline(
            connection, customer_id=customer_id, object_ids=ids, after=after, limit=limit + 1
        )
    return _page(rows, limit, _timeline_entry, queries.timeline_key)


def _timeline_entry(row: Mapping[Any, Any]) -> TimelineEntry:
    kind = row["kind"]
    title, detail, status = row["title"], row["detail"], row["status"]
    if kind == "audit":
        title = f"{status} {title}"  # e.g. "subscription updated"
        status = None
    elif kind == "usage_threshold":
        title = f"{title} passed {status} %"
        detail = f"used {detail}"
        status = None
    return TimelineEntry(kind, row["at"], str(row["ref"]), title, detail, status)


# -- stripe events -----------------------------------------------------------------------------


def list_events(
    *,
    db: Database,
    status: str | None = None,
    type_: str | None = None,
    customer_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Return stored Stripe events, newest first, filtered by status, type (a trailing `*`
    matches a prefix) and customer."""
    limit = _limit(limit)
    _one_of(status, EVENT_STATUSES, "status")
    before = _time_cursor(cursor)
    with db.engine.connect() as connection:
        object_ids = None
        if customer_id:
            object_ids = queries.customer_object_ids(connection, customer_id) or []
        rows = queries.events_page(
            connection,
            status=status,
            type_=type_,
            object_ids=object_ids,
            before=before,
            limit=limit + 1,
        )
        events = {event.id: event for event in stored_events(connection, rows)}
    return _page(
        rows, limit, lambda row: events[row["id"]], lambda row: (row["created"], row["id"])
    )


@dataclass(frozen=True)
class EventDetail:
    """One stored event with its raw body, for an operator to read."""

    event: StoredEvent
    payload: dict[str, Any]


def get_event(*, db: Database, event_id: str) -> EventDetail:
    """Return one stored event and its raw body, or raise NotFound."""
    with db.engine.connect() as connection:
        rows = queries.events_by_id(connection, event_id)
        if not rows:
            raise NotFound(f"no stored event {event_id!r}", param="id")
        (event,) = stored_events(connection, rows[:1])
    return EventDetail(event, orjson.loads(rows[0]["payload"]))


def failed_event_ids(*, db: Database, limit: int = 500) -> list[str]:
    """Return the ids of failed stored events, oldest first."""
    with db.engine.connect() as connection:
        return queries.failed_event_ids(connection, limit)


# -- the outbox ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    """An email, an app webhook or a usage report to Stripe waiting, sent or given up on."""

    kind: str
    id: str
    customer_id: str
    name: str
    status: str
    attempts: int
    last_error: str | None
    created: datetime
    next_attempt_at: datetime | None
    done_at: datetime | None

    @property
    def reference(self) -> str:
        """The id the API and the pages name it by: `email_<n>`, `usage_<n>` or the event id."""
        return f"{self.kind}_{self.id}" if self.kind in _NUMBERED else self.id

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.reference,
            "customer": self.customer_id,
            "name": self.name,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created": self.created.isoformat(),
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
            "done_at": self.done_at.isoformat() if self.done_at else None,
        }


def list_outbox(
    *,
    db: Database,
    kind: str | None = None,
    status: str | None = None,
    customer_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Return emails, app webhooks and usage reports to Stripe, newest first."""
    limit = _limit(limit)
    _one_of(kind, OUTBOX_KINDS, "kind")
    _one_of(status, OUTBOX_STATUSES, "status")
    before = _time_cursor(cursor)
    with db.engine.connect() as connection:
        rows = queries.outbox_page(
            connection,
            kind=kind,
            status=status,
            customer_id=customer_id,
            before=before,
            limit=limit + 1,
        )
    return _page(rows, limit, _outbox_item, lambda row: (row["created_at"], str(row["id"])))


# Kinds whose rows are numbered: their references carry the kind (`email_3`, `usage_7`).
_NUMBERED = ("email", "usage")


def _outbox_item(row: Mapping[Any, Any]) -> OutboxItem:
    return OutboxItem(
        kind=row["kind"],
        id=str(row["id"]),
        customer_id=row["customer_id"],
        name=row["name"],
        status=row["status"],
        attempts=int(row["attempts"]),
        last_error=row["last_error"],
        created=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        done_at=row["done_at"],
    )


def get_outbox_item(*, db: Database, outbox_id: str) -> OutboxItem:
    """Return one email (`email_<n>`) or app webhook of the outbox, or raise NotFound."""
    kind, row_id = outbox_reference(outbox_id)
    with db.engine.connect() as connection:
        row = queries.outbox_item(connection, kind=kind, row_id=row_id)
    if row is None:
        raise NotFound(f"no outbox item {outbox_id!r}", param="id")
    return _outbox_item(row)


def outbox_reference(outbox_id: str) -> tuple[str, Any]:
    """Return the kind and row id an outbox id names: `email_<n>`, `usage_<n>` or an app event
    id."""
    for kind in _NUMBERED:
        if outbox_id.startswith(f"{kind}_"):
            number = outbox_id.removeprefix(f"{kind}_")
            if not number.isdigit():
                raise NotFound(f"no outbox item {outbox_id!r}", param="id")
            return kind, int(number)
    return "app_webhook", outbox_id


def retry_outbox_item(*, db: Database, clock: Clock, outbox_id: str) -> OutboxItem:
    """Make a failed (or waiting) email, app webhook or usage report due now, its attempts
    counted afresh."""
    kind, row_id = outbox_reference(outbox_id)
    with db.write_connection() as connection:
        row = queries.outbox_item(connection, kind=kind, row_id=row_id)
        if row is None:
            raise NotFound(f"no outbox item {outbox_id!r}", param="id")
        if row["status"] not in ("failed", "pending"):
            raise InvalidRequest(
                f"outbox item {outbox_id!r} is {row['status']}; only failed or pending items "
                "are retried",
                param="id",
            )
        queries.retry_outbox_row(connection, kind=kind, row_id=row_id, now=clock.now())
    return get_outbox_item(db=db, outbox_id=outbox_id)


# -- reconciliation ------------------------------------------------------------------------------


def list_reconciliations(*, db: Database, cursor: str | None = None, limit: int = 20) -> Page:
    """Return reconciliation runs, newest first."""
    limit = _limit(limit)
    before = int(decode_cursor(cursor, 1)[0]) if cursor else None
    with db.engine.connect() as connection:
        rows = queries.reconciliation_runs(connection, before=before, limit=limit + 1)
    return _page(rows, limit, report_of, lambda row: (int(row["id"]),))


# -- api keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyView:
    id: str
    name: str
    scope: str
    prefix: str
    created: datetime
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "prefix": self.prefix,
            "created": self.created.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def list_api_keys(*, db: Database) -> list[ApiKeyView]:
    """Return every stored API key (never a secret: only its first characters)."""
    with db.engine.connect() as connection:
        rows = queries.api_keys(connection)
    return [
        ApiKeyView(
            id=row["id"],
            name=row["name"],
            scope=row["scope"],
            prefix=row["prefix"],
            created=row["created_at"],
            revoked_at=row["revoked_at"],
        )
        for row in rows
    ]


def revoke_api_key(
    *, db: Database, clock: Clock, authenticator: ApiKeyAuthenticator, key_id: str
) -> ApiKeyView:
    """Revoke a stored key: this process refuses it at once, other servers within 10 seconds
    (their key cache)."""
    with db.write_connection() as connection:
        if not queries.api_key_exists(connection, key_id):
            raise NotFound(f"no API key {key_id!r}", param="id")
        queries.revoke_api_key(connection, key_id, clock.now())
    authenticator.forget(key_id)
    return next(key for key in list_api_keys(db=db) if key.id == key_id)


# -- the overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str

    def to_json(self) -> dict[str, Any]:
        return {"amount": self.amount, "currency": self.currency}


# The window of the console's payment fees (the overview's figure and the fees page).
FEES_DAYS = 30


@dataclass(frozen=True)
class Summary:
    """The overview's figures (money in minor units per currency)."""

    at: datetime
    mrr: list[dict[str, Any]]
    mrr_total: list[Money]
    arr_total: list[Money]
    customers_by_status: dict[str, int]
    trials_ending_this_week: int
    new_this_month: int
    churned_this_month: int
    failed_payments: int
    failed_payment_amounts: list[Money]
    # What the last FEES_DAYS days' charges and lost disputes cost in fees (FeeSchedule).
    payment_fees: list[Money]
    open_disputes: list[dict[str, Any]]
    webhook_failures: int
    oldest_pending_webhook_seconds: int | None
    usage_sync_lag_seconds: int | None
    outbox: dict[str, int]
    last_reconciliation: ReconcileReport | None

    def to_json(self) -> dict[str, Any]:
        last = self.last_reconciliation
        return {
            "at": self.at.isoformat(),
            "mrr": self.mrr,
            "mrr_total": [money.to_json() for money in self.mrr_total],
            "arr_total": [money.to_json() for money in self.arr_total],
            "customers_by_status": self.customers_by_status,
            "trials_ending_this_week": self.trials_ending_this_week,
            "new_customers_this_month": self.new_this_month,
            "churned_this_month": self.churned_this_month,
            "failed_payments": {
                "count": self.failed_payments,
                "amounts": [money.to_json() for money in self.failed_payment_amounts],
            },
            "payment_fees": {
                "days": FEES_DAYS,
                "amounts": [money.to_json() for money in self.payment_fees],
            },
            "open_disputes": self.open_disputes,
            "webhooks": {
                "failed": self.webhook_failures,
                "oldest_pending_seconds": self.oldest_pending_webhook_seconds,
            },
            "usage_sync_lag_seconds": self.usage_sync_lag_seconds,
            "outbox": self.outbox,
            "last_reconciliation": last.to_json() if last else None,
        }


# What counts as recurring revenue: paying subscriptions (canceling ones pay until they end).
MRR_STATUSES = queries.PAYING


def summarize(deps: Deps) -> Summary:
    """Return the overview's figures, read from the mirror and Tollgate's own tables."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    now = clock.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with db.engine.connect() as connection:
        groups = queries.live_subscriptions(connection)
        trials = queries.trials_ending(connection, now, now + timedelta(days=7))
        new = queries.customers_created_since(connection, month_start)
        churned = queries.subscriptions_ended_since(connection, month_start)
        failed = queries.failed_charges_since(connection, month_start)
        fees_since = now - timedelta(days=FEES_DAYS)
        charged = queries.charge_amounts_since(connection, fees_since)
        lost = queries.lost_disputes_by_currency(connection, fees_since)
        disputes = queries.open_disputes(connection)
        deadlines = {
            d["id"]: _due_by(queries.latest_payload(connection, d["id"])) for d in disputes
        }
        webhook_failures, oldest_pending = queries.webhook_health(connection)
        oldest_usage = queries.oldest_unsent_usage(connection)
        outbox = queries.outbox_counts(connection)
        last_run = queries.latest_run(connection)
    mrr: dict[tuple[str, str], int] = defaultdict(int)
    paying: dict[tuple[str, str], int] = defaultdict(int)
    by_status: dict[str, int] = dict.fromkeys(
        ("trialing", "active", "canceling", "past_due", "unpaid"), 0
    )
    for group in groups:
        canceling = group["status"] in queries.LIVE_CANCELABLE and group["cancel_pending"]
        status = "canceling" if canceling else group["status"]
        by_status[status] = by_status.get(status, 0) + int(group["count"])
        if group["status"] not in MRR_STATUSES or not group["plan"] or not group["currency"]:
            continue
        plan = catalog.plans.get(group["plan"])
        price = next(
            (
                p
                for p in (plan.prices if plan else ())
                if p.interval == group["interval"] and p.currency == group["currency"]
            ),
            None,
        )
        if price is None:
            continue
        monthly = monthly_amount(price.amount_minor * int(group["seats"] or 1), str(price.interval))
        mrr[(group["plan"], group["currency"])] += monthly * int(group["count"])
        paying[(group["plan"], group["currency"])] += int(group["count"])
    totals: dict[str, int] = defaultdict(int)
    for (_, currency), amount in mrr.items():
        totals[currency] += amount
    return Summary(
        at=now,
        mrr=[
            {
                "plan": plan,
                "currency": currency,
                "subscriptions": paying[(plan, currency)],
                "mrr": amount,
                "arr": amount * 12,
            }
            for (plan, currency), amount in sorted(mrr.items())
        ],
        mrr_total=[Money(amount, currency) for currency, amount in sorted(totals.items())],
        arr_total=[Money(amount * 12, currency) for currency, amount in sorted(totals.items())],
        customers_by_status=by_status,
        trials_ending_this_week=trials,
        new_this_month=new,
        churned_this_month=churned,
        failed_payments=sum(int(row["count"]) for row in failed),
        failed_payment_amounts=[Money(int(row["amount"] or 0), row["currency"]) for row in failed],
        payment_fees=_fees_by_currency(
            fee_schedule(deps.settings), deps.settings.fee_dispute, charged, lost
        ),
        open_disputes=[
            {
                "id": d["id"],
                "customer": d["customer_id"],
                "amount": {"amount": int(d["amount"]), "currency": d["currency"]},
                "status": d["status"],
                "reason": d["reason"],
                "evidence_due_by": _iso(deadlines[d["id"]]),
            }
            for d in disputes
        ],
        webhook_failures=webhook_failures,
        oldest_pending_webhook_seconds=_age(now, oldest_pending),
        usage_sync_lag_seconds=_age(now, oldest_usage),
        outbox={f"{kind}.{status}": count for (kind, status), count in sorted(outbox.items())},
        last_reconciliation=report_of(last_run) if last_run else None,
    )


def _fees_by_currency(
    schedule: FeeSchedule,
    dispute_fee: int,
    charged: Sequence[Mapping[Any, Any]],
    lost: Mapping[str, int],
) -> list[Money]:
    """Return the fees of charges counted per amount (`charge_amounts_since`) and of lost
    disputes, per currency, as `payment_fees` reckons them."""
    by_currency: dict[str, list[tuple[int, str | None, int]]] = defaultdict(list)
    for row in charged:
        by_currency[row["currency"]].append(
            (int(row["amount"]), row["payment_method_type"], int(row["count"]))
        )
    return [
        Money(
            schedule.total(by_currency.get(currency, ())) + lost.get(currency, 0) * dispute_fee,
            currency,
        )
        for currency in sorted({*by_currency, *lost})
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _age(now: datetime, since: datetime | None) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _due_by(payload: str | None) -> datetime | None:
    """Return a dispute's evidence deadline from its latest event's body, if it says one."""
    if not payload:
        return None
    obj = (orjson.loads(payload).get("data") or {}).get("object") or {}
    due = (obj.get("evidence_details") or {}).get("due_by")
    return datetime.fromtimestamp(due, UTC) if isinstance(due, int) else None


# -- payment fees --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerFees:
    """What one customer's charges cost in fees, and what ACH would have cost."""

    customer_id: str | None
    email: str | None
    currency: str
    charges: int
    charged: int
    fees: int
    by_method: dict[str, int]
    fees_if_ach: int

    @property
    def saving_with_ach(self) -> int:
        return max(0, self.fees - self.fees_if_ach)

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "email": self.email,
            "currency": self.currency,
            "charges": self.charges,
            "charged": self.charged,
            "fees": self.fees,
            "fees_by_method": self.by_method,
            "fees_if_ach": self.fees_if_ach,
            "saving_with_ach": self.saving_with_ach,
        }


@dataclass(frozen=True)
class FeesReport:
    since: datetime
    schedule: FeeSchedule
    customers: list[CustomerFees]
    totals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def would_save(self) -> list[CustomerFees]:
        """Customers paying by card whose fees ACH would cut, biggest saving first."""
        found = [c for c in self.customers if c.saving_with_ach > 0]
        return sorted(found, key=lambda c: (-c.saving_with_ach, c.customer_id or ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "schedule": {
                "card_percent": str(self.schedule.card_percent),
                "card_fixed": self.schedule.card_fixed,
                "ach_percent": str(self.schedule.ach_percent),
                "ach_cap": self.schedule.ach_cap,
            },
            "totals": self.totals,
            "customers": [c.to_json() for c in self.customers],
            "would_save_with_ach": [c.customer_id for c in self.would_save],
        }


def fee_schedule(settings: Settings) -> FeeSchedule:
    return FeeSchedule(
        card_percent=settings.fee_card_percent,
        card_fixed=settings.fee_card_fixed,
        ach_percent=settings.fee_ach_percent,
        ach_cap=settings.fee_ach_cap,
    )


def payment_fees(
    *, db: Database, clock: Clock, settings: Settings, days: int = FEES_DAYS
) -> FeesReport:
    """Return the fees of the last `days` days of succeeded charges, per customer and in total.

    A refund does not give the fee back (Stripe keeps it), so charges count in full. A dispute
    lost in the window adds TOLLGATE_FEE_DISPUTE (`dispute` in `by_method`), whatever the method.
    """
    schedule = fee_schedule(settings)
    since = clock.now() - timedelta(days=days)
    with db.engine.connect() as connection:
        rows = queries.charges_since(connection, since)
        lost = queries.lost_disputes_since(connection, since)
    grouped: dict[tuple[str | None, str], list[Mapping[Any, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["customer_id"], row["currency"])].append(row)
    disputes: dict[tuple[str | None, str], list[Mapping[Any, Any]]] = defaultdict(list)
    for row in lost:
        disputes[(row["customer_id"], row["currency"])].append(row)
    customers = []
    for key in sorted({*grouped, *disputes}, key=lambda k: (k[0] or "", k[1])):
        customer_id, currency = key
        charges, lost_here = grouped.get(key, []), disputes.get(key, [])
        by_method: dict[str, int] = defaultdict(int)
        for charge in charges:
            by_method[method_label(charge["payment_method_type"])] += schedule.fee(
                int(charge["amount"]), charge["payment_method_type"]
            )
        dispute_fees = len(lost_here) * settings.fee_dispute
        if dispute_fees:
            by_method["dispute"] = dispute_fees
        customers.append(
            CustomerFees(
                customer_id=customer_id,
                email=(charges or lost_here)[0]["email"],
                currency=currency,
                charges=len(charges),
                charged=sum(int(c["amount"]) for c in charges),
                fees=sum(by_method.values()),
                by_method=dict(by_method),
                fees_if_ach=sum(schedule.ach_fee(int(c["amount"])) for c in charges) + dispute_fees,
            )
        )
    customers.sort(key=lambda c: (-c.fees, c.customer_id or ""))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in customers:
        total = totals[c.currency]
        total["charges"] += c.charges
        total["charged"] += c.charged
        total["fees"] += c.fees
        total["saving_with_ach"] += c.saving_with_ach
        for method, amount in c.by_method.items():
            total[f"fees_{method}"] += amount
    return FeesReport(
        since=since,
        schedule=schedule,
        customers=customers,
        totals=[{"currency": cur, **dict(values)} for cur, values in sorted(totals.items())],
    )
