"""What the operator console reads: customer lists, a customer's timeline, the overview's
figures, the outbox, reconciliation runs, API keys and charges' fees.

Lists page by keyset (the last row's sort value and id), never by offset, so page 2,000 of
100,000 customers costs what page 1 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)

from tollgate.db.tables import (
    API_KEYS,
    APP_EVENTS,
    AUDIT_LOG,
    CHARGES,
    CUSTOMERS,
    DISPUTES,
    INVOICES,
    METER_OUTBOX,
    NOTIFICATIONS,
    RECONCILIATION_RUNS,
    STRIPE_EVENTS,
    SUBSCRIPTIONS,
    USAGE_COUNTERS,
    USAGE_THRESHOLDS,
)

ENDED = ("canceled", "incomplete_expired")
LIVE_CANCELABLE = ("active", "trialing")
SORTS = {
    "created": CUSTOMERS.c.created_at,
    "id": CUSTOMERS.c.id,
    "email": CUSTOMERS.c.email,
    "name": CUSTOMERS.c.name,
}

# -- customers --------------------------------------------------------------------------------


def _current_subscription_id(customer_id: ColumnElement[Any]) -> Any:
    """The subscription holding a customer's plan: live first, newest (as the services pick)."""
    subs = SUBSCRIPTIONS.c
    ended_last = case((subs.status.in_(ENDED), 1), else_=0)
    return (
        select(subs.id)
        .where(subs.customer_id == customer_id)
        .order_by(ended_last, subs.created_at.desc(), subs.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _is_canceling(subs: Any) -> ColumnElement[bool]:
    return and_(
        subs.status.in_(LIVE_CANCELABLE),
        or_(subs.cancel_at_period_end.is_(True), subs.cancel_at.is_not(None)),
    )


def customers_page(
    connection: Connection,
    *,
    search: str | None,
    plan: str | None,
    status: str | None,
    currency: str | None,
    offline: bool | None,
    over_percent: int | None,
    sort: str,
    descending: bool,
    after: tuple[Any, str] | None,
    limit: int,
    now: datetime,
    default_plan: str | None,
    catalog_currency: str,
) -> list[RowMapping]:
    """Return one page of customers with their current subscription's facts."""
    c = CUSTOMERS.c
    current = SUBSCRIPTIONS.alias("current")
    s = current.c
    query = (
        select(
            c.id,
            c.email,
            c.name,
            c.stripe_customer_id,
            c.offline,
            c.created_at,
            c.plan.label("assigned_plan"),
            func.coalesce(c.currency, c.requested_currency, s.currency, catalog_currency).label(
                "currency"
            ),
            s.status.label("subscription_status"),
            s.plan.label("subscription_plan"),
            s.cancel_at_period_end,
            s.cancel_at,
            s.trial_end,
            s.current_period_end,
        )
        .select_from(CUSTOMERS)
        .where(c.deleted.is_(False))
    )
    live = s.status.is_not(None) & s.status.not_in(ENDED)
    kept_offline = and_(c.offline.is_(True), c.plan.is_not(None))
    if status and status not in ("none", "canceled"):
        # A live status: the customer's newest live subscription has it. Joined by customer
        # with "no newer live one" instead of the per-customer subquery below, so PostgreSQL
        # can walk customers in the sorted order and stop at a page (bench/console.py).
        newer = SUBSCRIPTIONS.alias("newer")
        n = newer.c
        is_newest_live = ~exists(
            select(literal(1)).where(
                n.customer_id == s.customer_id,
                n.status.not_in(ENDED),
                or_(n.created_at > s.created_at, and_(n.created_at == s.created_at, n.id > s.id)),
            )
        )
        joined = and_(s.customer_id == c.id, _status_matches(status, s, false()), is_newest_live)
        if plan and status != "active":
            joined = and_(joined, s.plan == plan)
        if status == "active":
            # An offline customer with a plan Tollgate keeps is active without a subscription.
            query = query.outerjoin(current, joined).where(
                or_(
                    s.id.is_not(None),
                    and_(
                        kept_offline,
                        ~exists(
                            select(literal(1)).where(
                                SUBSCRIPTIONS.c.customer_id == c.id,
                                SUBSCRIPTIONS.c.status.not_in(ENDED),
                            )
                        ),
                    ),
                )
            )
        else:
            query = query.join(current, joined)
    else:
        query = query.outerjoin(current, s.id == _current_subscription_id(c.id))
        if status:
            no_live = ~func.coalesce(live, false())
            query = query.where(_status_matches(status, s, no_live), ~kept_offline)
    if search:
        needle = search.strip().lower()
        pattern = f"%{_escape_like(needle)}%"
        query = query.where(
            or_(
                c.id == search.strip(),
                c.stripe_customer_id == search.strip(),
                _search_text().like(pattern, escape="\\"),
            )
        )
    if plan:
        assigned = func.coalesce(c.plan, literal(default_plan)) if default_plan else c.plan
        query = query.where(
            or_(and_(live, s.plan == plan), and_(~func.coalesce(live, false()), assigned == plan))
        )
    if currency:
        query = query.where(
            func.coalesce(c.currency, c.requested_currency, s.currency, catalog_currency)
            == currency
        )
    if offline is not None:
        query = query.where(c.offline.is_(offline))
    if over_percent is not None:
        t, u = USAGE_THRESHOLDS.c, USAGE_COUNTERS.c
        query = query.where(
            exists(
                select(literal(1))
                .select_from(
                    USAGE_THRESHOLDS.join(
                        USAGE_COUNTERS,
                        and_(
                            u.customer_id == t.customer_id,
                            u.meter == t.meter,
                            u.period_start == t.period_start,
                        ),
                    )
                )
                .where(t.customer_id == c.id, t.percent >= over_percent, u.period_end > now)
            )
        )
    key = SORTS[sort]
    if after is not None:
        value, last_id = after
        if value is None:
            # NULLs sort last ascending and first descending (as below): continue past them.
            query = query.where(
                and_(key.is_(None), c.id > last_id)
                if not descending
                else or_(key.is_not(None), and_(key.is_(None), c.id < last_id))
            )
        elif sort == "id":
            query = query.where(c.id < last_id if descending else c.id > last_id)
        else:
            if descending:
                query = query.where(or_(key < value, and_(key == value, c.id < last_id)))
            else:
                query = query.where(
                    or_(key > value, key.is_(None), and_(key == value, c.id > last_id))
                )
    if sort == "id":
        order = [c.id.desc() if descending else c.id.asc()]
    else:
        order = [
            key.desc().nulls_first() if descending else key.asc().nulls_last(),
            c.id.desc() if descending else c.id.asc(),
        ]
    rows = connection.execute(query.order_by(*order).limit(limit)).mappings().all()
    return list(rows)


def _status_matches(status: str, s: Any, no_live: ColumnElement[bool]) -> ColumnElement[bool]:
    if status == "none":
        return and_(no_live, or_(s.status.is_(None), s.status.not_in(ENDED)))
    if status == "canceled":
        return s.status.in_(ENDED)
    if status == "canceling":
        return _is_canceling(s)
    if status in LIVE_CANCELABLE:
        return and_(s.status == status, ~_is_canceling(s))
    return s.status == status


def _search_text() -> ColumnElement[str]:
    """The text a search looks in: exactly the expression of PostgreSQL's trigram index
    `ix_customers_search_trgm` (migration 0010), so the index answers it."""
    c = CUSTOMERS.c
    # Constants written into the SQL (not bound): the planner matches an index expression only
    # when the query's is the same text.
    empty: ColumnElement[str] = literal_column("''")
    space: ColumnElement[str] = literal_column("' '")
    return func.lower(
        func.coalesce(c.email, empty)
        .op("||")(space)
        .op("||")(func.coalesce(c.name, empty))
        .op("||")(space)
        .op("||")(c.id)
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- a customer's timeline -------------------------------------------------------------------


def customer_object_ids(connection: Connection, customer_id: str) -> list[str] | None:
    """Return the ids Stripe events and audit rows of a customer name: its own, its Stripe
    customer's, and its newest subscriptions', invoices' and charges' (None: no customer).

    One statement: the customer's row and its objects' ids (the newest hundred of each kind;
    older objects' history stays reachable through the customer's own rows).
    """
    own = select(
        literal(0).label("part"),
        CUSTOMERS.c.stripe_customer_id.label("object_id"),
        cast(CUSTOMERS.c.deleted, String).label("deleted"),
    ).where(CUSTOMERS.c.id == customer_id)
    parts = [own.subquery().select()]
    for table in (SUBSCRIPTIONS, INVOICES, CHARGES):
        parts.append(
            select(literal(1).label("part"), table.c.id, literal(None, String))
            .where(table.c.customer_id == customer_id)
            .order_by(table.c.created_at.desc())
            .limit(100)
            .subquery()
            .select()
        )
    rows = connection.execute(union_all(*parts)).all()
    head = [row for row in rows if row[0] == 0]
    if not head or head[0][2] in ("1", "true", "True"):
        return None
    ids = [customer_id] + ([head[0][1]] if head[0][1] else [])
    return ids + [row[1] for row in rows if row[0] == 1]


def timeline(
    connection: Connection,
    *,
    customer_id: str,
    object_ids: Sequence[str],
    before: datetime | None,
    limit: int,
) -> list[RowMapping]:
    """Return a customer's newest entries of every kind at or before `before`, newest first
    (the caller drops those it showed already).

    Each source is read through its own index (newest `limit` rows), then merged.
    """
    ids = list(object_ids)
    a, e, t, n, w = (
        AUDIT_LOG.c,
        STRIPE_EVENTS.c,
        USAGE_THRESHOLDS.c,
        NOTIFICATIONS.c,
        APP_EVENTS.c,
    )
    audit = select(
        literal("audit").label("kind"),
        a.at.label("at"),
        cast(a.id, String).label("ref"),
        a.action.label("title"),
        a.actor.label("detail"),
        a.object_type.label("status"),
    )
    events = select(
        literal("stripe_event").label("kind"),
        e.created.label("at"),
        e.id.label("ref"),
        e.type.label("title"),
        e.last_error.label("detail"),
        e.status.label("status"),
    )
    sources = [
        # One branch per object, each the newest rows of its (object_id, time) index, so an
        # object with 10,000 rows costs a page, not a sort of all of them.
        _newest_per_object(audit, a.object_id, a.at, ids, before, limit),
        _newest_per_object(events, e.object_id, e.created, ids, before, limit),
        select(
            literal("usage_threshold").label("kind"),
            t.crossed_at.label("at"),
            t.meter.label("ref"),
            t.meter.label("title"),
            cast(t.used, String).label("detail"),
            cast(t.percent, String).label("status"),
        )
        .where(t.customer_id == customer_id, *([t.crossed_at <= before] if before else []))
        .order_by(t.crossed_at.desc())
        .limit(limit),
        select(
            literal("email").label("kind"),
            n.created_at.label("at"),
            cast(n.id, String).label("ref"),
            n.template.label("title"),
            n.last_error.label("detail"),
            n.status.label("status"),
        )
        .where(n.customer_id == customer_id, *([n.created_at <= before] if before else []))
        .order_by(n.created_at.desc())
        .limit(limit),
        select(
            literal("app_webhook").label("kind"),
            w.created_at.label("at"),
            w.id.label("ref"),
            w.type.label("title"),
            w.last_error.label("detail"),
            w.status.label("status"),
        )
        .where(w.customer_id == customer_id, *([w.created_at <= before] if before else []))
        .order_by(w.created_at.desc())
        .limit(limit),
    ]
    # One statement: each source keeps its own index order and limit inside its branch.
    merged = union_all(*(source.subquery().select() for source in sources)).subquery()
    rows = list(connection.execute(select(merged)).mappings().all())
    rows.sort(key=timeline_key, reverse=True)
    return rows


def _newest_per_object(
    base: Any,
    object_id: Any,
    at: Any,
    ids: Sequence[str],
    before: datetime | None,
    limit: int,
) -> Any:
    branches = [
        base.where(object_id == one, *([at <= before] if before else []))
        .order_by(at.desc())
        .limit(limit)
        .subquery()
        .select()
        for one in ids
    ]
    merged = union_all(*branches).subquery()
    return select(merged).order_by(merged.c.at.desc()).limit(limit)


def timeline_key(row: RowMapping) -> tuple[datetime, str, str]:
    """The order of a timeline, newest first when reversed (ties broken by kind and ref)."""
    return (row["at"], row["kind"], str(row["ref"]))


# -- the overview -------------------------------------------------------------------------


def live_subscriptions(connection: Connection) -> list[RowMapping]:
    """Return live subscriptions grouped by plan, interval, currency, seats, status and whether
    a cancel is pending, with how many there are of each."""
    s = SUBSCRIPTIONS.c
    pending_cancel = s.cancel_at_period_end.is_(True) | s.cancel_at.is_not(None)
    query = (
        select(
            s.plan,
            s.interval,
            s.currency,
            s.seats,
            s.status,
            pending_cancel.label("cancel_pending"),
            func.count().label("count"),
        )
        .where(s.status.not_in(ENDED))
        .group_by(s.plan, s.interval, s.currency, s.seats, s.status, pending_cancel)
    )
    return list(connection.execute(query).mappings().all())


def trials_ending(connection: Connection, start: datetime, end: datetime) -> int:
    s = SUBSCRIPTIONS.c
    query = select(func.count()).where(
        s.status == "trialing", s.trial_end >= start, s.trial_end < end
    )
    return int(connection.execute(query).scalar_one())


def customers_created_since(connection: Connection, since: datetime) -> int:
    c = CUSTOMERS.c
    query = select(func.count()).where(c.created_at >= since, c.deleted.is_(False))
    return int(connection.execute(query).scalar_one())


def subscriptions_ended_since(connection: Connection, since: datetime) -> int:
    s = SUBSCRIPTIONS.c
    query = select(func.count()).where(
        s.status == "canceled", func.coalesce(s.ended_at, s.canceled_at) >= since
    )
    return int(connection.execute(query).scalar_one())


def failed_charges_since(connection: Connection, since: datetime) -> list[RowMapping]:
    ch = CHARGES.c
    query = (
        select(ch.currency, func.count().label("count"), func.sum(ch.amount).label("amount"))
        .where(ch.status == "failed", ch.created_at >= since)
        .group_by(ch.currency)
    )
    return list(connection.execute(query).mappings().all())


OPEN_DISPUTE_STATUSES = (
    "warning_needs_response",
    "needs_response",
    "warning_under_review",
    "under_review",
)


def open_disputes(connection: Connection) -> list[RowMapping]:
    d, ch = DISPUTES.c, CHARGES.c
    query = (
        select(d.id, d.amount, d.currency, d.status, d.reason, d.created_at, ch.customer_id)
        .select_from(DISPUTES.outerjoin(CHARGES, ch.id == d.charge_id))
        .where(d.status.in_(OPEN_DISPUTE_STATUSES))
        .order_by(d.created_at)
    )
    return list(connection.execute(query).mappings().all())


def latest_payload(connection: Connection, object_id: str) -> str | None:
    e = STRIPE_EVENTS.c
    query = select(e.payload).where(e.object_id == object_id).order_by(e.created.desc()).limit(1)
    return connection.execute(query).scalar()


def webhook_health(connection: Connection) -> tuple[int, datetime | None]:
    """Return how many stored Stripe events failed, and when the oldest unfinished one came."""
    e = STRIPE_EVENTS.c
    failed = connection.execute(select(func.count()).where(e.status == "failed")).scalar_one()
    oldest = connection.execute(
        select(func.min(e.received_at)).where(e.status.in_(("pending", "processing")))
    ).scalar()
    return int(failed), oldest


def oldest_unsent_usage(connection: Connection) -> datetime | None:
    m = METER_OUTBOX.c
    query = select(func.min(m.created_at)).where(m.status.in_(("pending", "claimed")))
    return connection.execute(query).scalar()


def outbox_counts(connection: Connection) -> dict[tuple[str, str], int]:
    """Return how many emails and app webhooks wait or failed (read through the status
    indexes; the delivered ones, nearly all rows, are not counted)."""
    counts: dict[tuple[str, str], int] = {}
    for kind, table in (("email", NOTIFICATIONS), ("app_webhook", APP_EVENTS)):
        rows = connection.execute(
            select(table.c.status, func.count())
            .where(table.c.status.in_(("pending", "failed")))
            .group_by(table.c.status)
        ).all()
        for status, count in rows:
            counts[(kind, status)] = int(count)
    return counts


def latest_run(connection: Connection) -> RowMapping | None:
    r = RECONCILIATION_RUNS.c
    row = connection.execute(
        select(RECONCILIATION_RUNS).order_by(r.started_at.desc(), r.id.desc()).limit(1)
    ).first()
    return row._mapping if row is not None else None


# -- the outbox ------------------------------------------------------------------------------


def outbox_page(
    connection: Connection,
    *,
    kind: str | None,
    status: str | None,
    customer_id: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[RowMapping]:
    """Return emails and app webhooks, newest first (keyset on created_at and a text id)."""
    n, w = NOTIFICATIONS.c, APP_EVENTS.c
    emails = select(
        literal("email").label("kind"),
        cast(n.id, String).label("id"),
        n.customer_id,
        n.template.label("name"),
        n.status,
        n.attempts,
        n.last_error,
        n.created_at,
        n.next_attempt_at,
        n.sent_at.label("done_at"),
    )
    hooks = select(
        literal("app_webhook").label("kind"),
        w.id,
        w.customer_id,
        w.type.label("name"),
        w.status,
        w.attempts,
        w.last_error,
        w.created_at,
        w.next_attempt_at,
        w.delivered_at.label("done_at"),
    )
    parts = []
    for part_kind, part, cols in (("email", emails, n), ("app_webhook", hooks, w)):
        if kind and kind != part_kind:
            continue
        if status:
            part = part.where(cols.status == status)
        if customer_id:
            part = part.where(cols.customer_id == customer_id)
        if before is not None:
            part = part.where(cols.created_at <= before[0])
        parts.append(part.order_by(cols.created_at.desc()).limit(limit + 1).subquery().select())
    if not parts:
        return []
    union = union_all(*parts).subquery()
    query = select(union)
    if before is not None:
        at, ref = before
        query = query.where(
            or_(union.c.created_at < at, and_(union.c.created_at == at, union.c.id < ref))
        )
    query = query.order_by(union.c.created_at.desc(), union.c.id.desc()).limit(limit)
    return list(connection.execute(query).mappings().all())


def notification(connection: Connection, notification_id: int) -> RowMapping | None:
    row = connection.execute(
        select(NOTIFICATIONS).where(NOTIFICATIONS.c.id == notification_id)
    ).first()
    return row._mapping if row is not None else None


def app_event(connection: Connection, event_id: str) -> RowMapping | None:
    row = connection.execute(select(APP_EVENTS).where(APP_EVENTS.c.id == event_id)).first()
    return row._mapping if row is not None else None


def retry_outbox_row(connection: Connection, *, kind: str, row_id: Any, now: datetime) -> int:
    """Make a failed or pending email or app webhook due now; return 1 if one was."""
    table = NOTIFICATIONS if kind == "email" else APP_EVENTS
    done = connection.execute(
        update(table)
        .where(table.c.id == row_id, table.c.status.in_(("failed", "pending")))
        .values(status="pending", next_attempt_at=now, attempts=0, last_error=None)
    )
    return int(done.rowcount or 0)


# -- stripe events ----------------------------------------------------------------------------


def events_page(
    connection: Connection,
    *,
    status: str | None,
    type_: str | None,
    object_ids: Sequence[str] | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[RowMapping]:
    e = STRIPE_EVENTS.c
    query = select(STRIPE_EVENTS)
    if status:
        query = query.where(e.status == status)
    if type_:
        query = query.where(
            e.type.like(f"{_escape_like(type_[:-1])}%", escape="\\")
            if type_.endswith("*")
            else e.type == type_
        )
    if object_ids is not None:
        query = query.where(e.object_id.in_(list(object_ids)))
    if before is not None:
        at, last_id = before
        query = query.where(or_(e.created < at, and_(e.created == at, e.id < last_id)))
    query = query.order_by(e.created.desc(), e.id.desc()).limit(limit)
    return list(connection.execute(query).mappings().all())


def events_by_id(connection: Connection, event_id: str) -> list[RowMapping]:
    query = select(STRIPE_EVENTS).where(STRIPE_EVENTS.c.id == event_id)
    return list(connection.execute(query).mappings().all())


def failed_event_ids(connection: Connection, limit: int) -> list[str]:
    e = STRIPE_EVENTS.c
    query = select(e.id).where(e.status == "failed").order_by(e.created).limit(limit)
    return list(connection.execute(query).scalars())


# -- reconciliation, API keys, fees -----------------------------------------------------------


def reconciliation_runs(
    connection: Connection, *, before: int | None, limit: int
) -> list[RowMapping]:
    r = RECONCILIATION_RUNS.c
    query = select(RECONCILIATION_RUNS)
    if before is not None:
        query = query.where(r.id < before)
    return list(connection.execute(query.order_by(r.id.desc()).limit(limit)).mappings().all())


def api_keys(connection: Connection) -> list[RowMapping]:
    k = API_KEYS.c
    query = select(k.id, k.name, k.scope, k.prefix, k.created_at, k.revoked_at).order_by(
        k.created_at.desc(), k.id
    )
    return list(connection.execute(query).mappings().all())


def revoke_api_key(connection: Connection, key_id: str, now: datetime) -> int:
    done = connection.execute(
        update(API_KEYS)
        .where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(done.rowcount or 0)


def api_key_exists(connection: Connection, key_id: str) -> bool:
    return (
        connection.execute(select(API_KEYS.c.id).where(API_KEYS.c.id == key_id)).first() is not None
    )


def charges_since(connection: Connection, since: datetime) -> list[RowMapping]:
    """Return the succeeded charges since `since` with their customer's email."""
    ch, c = CHARGES.c, CUSTOMERS.c
    query = (
        select(
            ch.id,
            ch.customer_id,
            c.email,
            ch.amount,
            ch.currency,
            ch.payment_method_type,
            ch.created_at,
        )
        .select_from(CHARGES.outerjoin(CUSTOMERS, c.id == ch.customer_id))
        .where(ch.status == "succeeded", ch.created_at >= since)
        .order_by(ch.customer_id, ch.created_at)
    )
    return list(connection.execute(query).mappings().all())


def lost_disputes_since(connection: Connection, since: datetime) -> list[RowMapping]:
    """Return the disputes lost since `since` with their customer's email."""
    d, c = DISPUTES.c, CUSTOMERS.c
    query = (
        select(d.id, d.customer_id, c.email, d.currency)
        .select_from(DISPUTES.outerjoin(CUSTOMERS, c.id == d.customer_id))
        .where(d.status == "lost", d.updated_at >= since)
        .order_by(d.customer_id, d.id)
    )
    return list(connection.execute(query).mappings().all())


# -- operators' actions on customers -------------------------------------------------------------


def insert_audit(
    connection: Connection,
    *,
    at: datetime,
    actor: str,
    object_type: str,
    object_id: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    connection.execute(
        AUDIT_LOG.insert().values(
            at=at,
            actor=actor,
            object_type=object_type,
            object_id=object_id,
            action=action[:32],
            before=before,
            after=after,
            event_id=None,
        )
    )


def customer_row(connection: Connection, customer_id: str) -> RowMapping | None:
    row = connection.execute(
        select(CUSTOMERS).where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.deleted.is_(False))
    ).first()
    return row._mapping if row is not None else None


def set_customer_offline(
    connection: Connection, customer_id: str, *, offline: bool, plan: str | None, now: datetime
) -> None:
    connection.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .values(offline=offline, plan=plan, updated_at=now)
    )


def resend_notification(connection: Connection, notification_id: int, now: datetime) -> int:
    """Make an email due again whatever became of it (sent, skipped or failed)."""
    done = connection.execute(
        update(NOTIFICATIONS)
        .where(NOTIFICATIONS.c.id == notification_id)
        .values(status="pending", next_attempt_at=now, attempts=0, last_error=None, sent_at=None)
    )
    return int(done.rowcount or 0)


def invoices_of(connection: Connection, customer_id: str, limit: int) -> list[RowMapping]:
    i = INVOICES.c
    query = (
        select(INVOICES)
        .where(i.customer_id == customer_id)
        .order_by(i.created_at.desc(), i.id.desc())
        .limit(limit)
    )
    return list(connection.execute(query).mappings().all())


def subscriptions_of(connection: Connection, customer_id: str) -> list[RowMapping]:
    s = SUBSCRIPTIONS.c
    query = (
        select(SUBSCRIPTIONS)
        .where(s.customer_id == customer_id)
        .order_by(s.created_at.desc(), s.id.desc())
    )
    return list(connection.execute(query).mappings().all())
