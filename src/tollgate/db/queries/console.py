"""What the operator console reads: customer lists, a customer's timeline, the overview's
figures, the outbox, reconciliation runs, API keys and charges' fees.

Lists page by keyset (the last row's sort value and id), never by offset, so page 2,000 of
100,000 customers costs what page 1 does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    String,
    Table,
    and_,
    bindparam,
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
PAYING = ("active", "past_due")  # what counts in MRR (canceling ones pay until they end)
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
    trial_ends_before: datetime | None = None,
    created_since: datetime | None = None,
    ended_since: datetime | None = None,
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
    # The overview's "trials ending this week", "new this month" and "churned this month".
    if trial_ends_before is not None:
        query = query.where(s.trial_end >= now, s.trial_end < trial_ends_before)
    if created_since is not None:
        query = query.where(c.created_at >= created_since)
    if ended_since is not None:
        query = query.where(
            or_(s.ended_at >= ended_since, and_(s.ended_at.is_(None), s.canceled_at >= ended_since))
        )
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
    if status == "paying":
        return s.status.in_(PAYING)
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


def _object_ids_statement() -> Any:
    """Built once, with the customer as a parameter: every page reuses it (and its compiled
    form) instead of building it again."""
    customer_id = bindparam("customer_id", type_=String)
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
    return union_all(*parts)


_OBJECT_IDS = _object_ids_statement()


def customer_object_ids(connection: Connection, customer_id: str) -> list[str] | None:
    """Return the ids Stripe events and audit rows of a customer name: its own, its Stripe
    customer's, and its newest subscriptions', invoices' and charges' (None: no customer).

    One statement: the customer's row and its objects' ids (the newest hundred of each kind;
    older objects' history stays reachable through the customer's own rows).
    """
    rows = connection.execute(_OBJECT_IDS, {"customer_id": customer_id}).all()
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
    after: tuple[datetime, str, str] | None,
    limit: int,
) -> list[Mapping[str, Any]]:
    """Return up to `limit` of a customer's entries of every kind that come after the cursor
    `after` (a time, kind and ref: `timeline_key` of the last entry shown), newest first.

    Each source is read through its own index (its newest rows), then merged.
    """
    if connection.dialect.name == "postgresql":
        params = {
            "ids": list(object_ids),
            "customer_id": customer_id,
            "at": after[0] if after else "infinity",
            "kind": after[1] if after else "",
            "ref": after[2] if after else "",
            "limit": limit,
        }
        result = connection.exec_driver_sql(_TIMELINE_PG, params).mappings()
        return [{**row, "at": row["at"].astimezone(UTC)} for row in result]
    return _timeline_union(
        connection, customer_id=customer_id, ids=list(object_ids), after=after, limit=limit
    )


def _timeline_union(
    connection: Connection,
    *,
    customer_id: str,
    ids: list[str],
    after: tuple[datetime, str, str] | None,
    limit: int,
) -> list[Mapping[str, Any]]:
    """SQLite: one UNION branch per source and per object (each the newest rows after the
    cursor through its index), merged and cut to `limit` here."""
    a, e, t, n, w = (
        AUDIT_LOG.c,
        STRIPE_EVENTS.c,
        USAGE_THRESHOLDS.c,
        NOTIFICATIONS.c,
        APP_EVENTS.c,
    )
    # (kind, time, ref, title, detail, status, whose rows: object ids or the customer's)
    sources = [
        ("audit", a.at, cast(a.id, String), a.action, a.actor, a.object_type, a.object_id),
        ("stripe_event", e.created, e.id, e.type, e.last_error, e.status, e.object_id),
        (
            "usage_threshold",
            t.crossed_at,
            t.meter,
            t.meter,
            cast(t.used, String),
            cast(t.percent, String),
            t.customer_id,
        ),
        (
            "email",
            n.created_at,
            cast(n.id, String),
            n.template,
            n.last_error,
            n.status,
            n.customer_id,
        ),
        ("app_webhook", w.created_at, w.id, w.type, w.last_error, w.status, w.customer_id),
    ]
    branches = []
    for kind, at, ref, title, detail, status, owner in sources:
        base = select(
            literal(kind).label("kind"),
            at.label("at"),
            ref.label("ref"),
            title.label("title"),
            detail.label("detail"),
            status.label("status"),
        ).where(*_after_cursor_sa(kind, at, ref, after))
        for one in ids if kind in ("audit", "stripe_event") else [customer_id]:
            branches.append(
                base.where(owner == one)
                .order_by(at.desc(), ref.desc())
                .limit(limit)
                .subquery()
                .select()
            )
    rows: list[Mapping[str, Any]] = [
        *connection.execute(select(union_all(*branches).subquery())).mappings()
    ]
    rows.sort(key=timeline_key, reverse=True)
    return rows[:limit]


def _after_cursor_sa(
    kind: str, at: Any, ref: Any, after: tuple[datetime, str, str] | None
) -> list[ColumnElement[bool]]:
    """The rows of one source (all of kind `kind`) that come after the cursor."""
    if after is None:
        return []
    when, after_kind, after_ref = after
    if kind < after_kind:
        return [at <= when]
    if kind == after_kind:
        return [at <= when, or_(at < when, ref < after_ref)]
    return [at < when]


# PostgreSQL: one fixed statement whatever the number of objects (a customer with two years of
# invoices names ~50): a LATERAL index scan per object id, newest first and limited, instead of
# one UNION branch per object, which SQLAlchemy built and PostgreSQL planned anew for every page.
# Each branch keeps only the rows after the cursor, so ties at the cursor's time cannot fill its
# limit; "C" collation orders kinds and refs as Python orders str (`timeline_key`).
def _after_cursor(kind: str, at: str, ref: str) -> str:
    return (
        f"{at} <= CAST(%(at)s AS timestamptz) AND ({at} < CAST(%(at)s AS timestamptz)"
        f" OR '{kind}' < %(kind)s COLLATE \"C\""
        f" OR ('{kind}' = %(kind)s AND {ref} COLLATE \"C\" < %(ref)s))"
        f' ORDER BY {at} DESC, {ref} COLLATE "C" DESC LIMIT %(limit)s'
    )


_TIMELINE_PG = f"""
WITH ids AS (SELECT DISTINCT unnest(CAST(%(ids)s AS text[])) AS id)
SELECT * FROM (
    SELECT 'audit' AS kind, a.at, a.ref, a.action AS title, a.actor AS detail,
        a.object_type AS status
    FROM ids CROSS JOIN LATERAL (
        SELECT at, CAST(id AS text) AS ref, action, actor, object_type FROM audit_log
        WHERE object_id = ids.id AND {_after_cursor("audit", "at", "CAST(id AS text)")}) AS a
    UNION ALL
    SELECT 'stripe_event', e.created, e.id, e.type, e.last_error, e.status
    FROM ids CROSS JOIN LATERAL (
        SELECT created, id, type, last_error, status FROM stripe_events
        WHERE object_id = ids.id AND {_after_cursor("stripe_event", "created", "id")}) AS e
    UNION ALL
    (SELECT 'usage_threshold', crossed_at, meter, meter, CAST(used AS text),
        CAST(percent AS text)
    FROM usage_thresholds
    WHERE customer_id = %(customer_id)s
        AND {_after_cursor("usage_threshold", "crossed_at", "meter")})
    UNION ALL
    (SELECT 'email', created_at, CAST(id AS text), template, last_error, status
    FROM notifications
    WHERE customer_id = %(customer_id)s
        AND {_after_cursor("email", "created_at", "CAST(id AS text)")})
    UNION ALL
    (SELECT 'app_webhook', created_at, id, type, last_error, status
    FROM app_events
    WHERE customer_id = %(customer_id)s AND {_after_cursor("app_webhook", "created_at", "id")})
) AS merged
ORDER BY at DESC, kind COLLATE "C" DESC, ref COLLATE "C" DESC
LIMIT %(limit)s
"""  # noqa: S608 (constants only; values are parameters)


def timeline_key(row: Mapping[str, Any]) -> tuple[datetime, str, str]:
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
    # Written so the (status, ended_at, canceled_at) index answers it (migration 0017).
    query = select(func.count()).where(
        s.status == "canceled",
        or_(s.ended_at >= since, and_(s.ended_at.is_(None), s.canceled_at >= since)),
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
    # Equalities joined by OR, not IN: SQLite reads them through the index of unfinished
    # events (migration 0024), a partial index it cannot prove an IN list fits.
    unfinished = or_(e.status == "pending", e.status == "processing")
    oldest = connection.execute(select(func.min(e.received_at)).where(unfinished)).scalar()
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
    """Return emails, app webhooks and usage reports to Stripe's meters, newest first (keyset
    on created_at and a text id)."""
    parts = []
    for part_kind, (table, _, _) in _OUTBOX_SOURCES.items():
        if kind and kind != part_kind:
            continue
        cols, part = table.c, _outbox_select(part_kind)
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


# What the outbox lists, by kind: the table, its name column and its done column. Usage reports
# are overage waiting for (or refused by) a Stripe meter: what the overview's sync lag measures.
_OUTBOX_SOURCES: dict[str, tuple[Table, str, str]] = {
    "email": (NOTIFICATIONS, "template", "sent_at"),
    "app_webhook": (APP_EVENTS, "type", "delivered_at"),
    "usage": (METER_OUTBOX, "feature", "sent_at"),
}


def _outbox_select(kind: str) -> Select[Any]:
    """The outbox's columns, alike for every kind."""
    table, name, done = _OUTBOX_SOURCES[kind]
    c = table.c
    return select(
        literal(kind).label("kind"),
        cast(c.id, String).label("id"),
        c.customer_id,
        c[name].label("name"),
        c.status,
        c.attempts,
        c.last_error,
        c.created_at,
        c.next_attempt_at,
        c[done].label("done_at"),
    )


def outbox_item(connection: Connection, *, kind: str, row_id: Any) -> RowMapping | None:
    """Return one email or usage report (by number) or app webhook (by id) with the outbox's
    columns."""
    table = _OUTBOX_SOURCES[kind][0]
    row = connection.execute(_outbox_select(kind).where(table.c.id == row_id)).first()
    return row._mapping if row is not None else None


def notification(connection: Connection, notification_id: int) -> RowMapping | None:
    row = connection.execute(
        select(NOTIFICATIONS).where(NOTIFICATIONS.c.id == notification_id)
    ).first()
    return row._mapping if row is not None else None


def retry_outbox_row(connection: Connection, *, kind: str, row_id: Any, now: datetime) -> int:
    """Make a failed or pending email, app webhook or usage report due now; return 1 if one
    was. A usage report keeps its identifier, so Stripe counts a resend once."""
    table = _OUTBOX_SOURCES[kind][0]
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


def charge_amounts_since(connection: Connection, since: datetime) -> list[RowMapping]:
    """Return the succeeded charges since `since` counted per currency, method and amount (a
    fee is rounded per charge, so charges of one amount share one fee)."""
    ch = CHARGES.c
    query = (
        select(ch.currency, ch.payment_method_type, ch.amount, func.count().label("count"))
        .where(ch.status == "succeeded", ch.created_at >= since)
        .group_by(ch.currency, ch.payment_method_type, ch.amount)
    )
    return list(connection.execute(query).mappings().all())


def lost_disputes_by_currency(connection: Connection, since: datetime) -> dict[str, int]:
    """Return how many disputes were lost since `since`, per currency."""
    d = DISPUTES.c
    query = (
        select(d.currency, func.count())
        .where(d.status == "lost", d.updated_at >= since)
        .group_by(d.currency)
    )
    return {str(currency): int(count) for currency, count in connection.execute(query)}


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
