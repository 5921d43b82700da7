"""Entitlements: read a customer's state, decide, and keep decisions cached until they change.

The cache is per process. An entry is dropped when its customer appears in the change feed
(`customer_changes`, written in the same transaction as any change to plan, status, dunning,
credits or a usage threshold), when time alone changes the answer (period end, end of a
past-due grace period), and after `ttl` seconds at most, which bounds how stale a metered
feature's `used` can be when another process records the usage. Usage recorded through this
process drops the entry at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import billing as billing_queries
from tollgate.db.queries import deals as deal_queries
from tollgate.db.queries import usage as usage_queries
from tollgate.db.queries import usage_controls as usage_controls_queries
from tollgate.db.queries.changes import customers_changed_after, last_change
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, FeatureType
from tollgate.domain.deals import Deals
from tollgate.domain.entitlements import CustomerState, Decision, Entitlements, entitlements
from tollgate.domain.errors import NotFound
from tollgate.domain.events import ENDED_STATUSES
from tollgate.domain.metering import (
    Period,
    held_with_pending,
    open_period,
    usage_with_pending,
)
from tollgate.domain.subscriptions import customer_currency, plan_of
from tollgate.services import credit_ledger
from tollgate.services.background import BackgroundLoop


@dataclass(frozen=True, slots=True)
class BillingCustomer:
    """What metering and entitlements need of a customer: plan, status and open period."""

    id: str
    plan: str | None
    status: str
    period: Period
    interval: str | None
    currency: str
    seats: int | None
    stripe_customer_id: str | None
    stripe_account: str | None
    offline: bool
    dunning_access: str | None
    past_due_since: datetime | None
    plan_version: int | None = None  # the subscription's plan version (issue 20)
    deals: Deals | None = None  # the customer's overrides and this period's grants (issue 20)
    subscription_id: str | None = None  # the live subscription (its add-on items count)
    processing_access: str | None = None  # while a bank debit processes (issue 21)
    dispute_access: str | None = None  # while a dispute is open or lost (issue 21)


class _Made(NamedTuple):
    """A customer made from its rows, and what it was made from."""

    catalog: Catalog
    rows: list[Any]  # its rows as `billing_queries.customer_rows` gives them
    customer: BillingCustomer


# Customers made from their rows, by id: a caller loading the same customers again and again
# (a consume writer, group after group) passes one, and a customer whose rows read the same
# is not made again (rows of plain values compare in C, unconverted datetimes included;
# making the customer converts them and builds it in Python).
CustomersMade = dict[str, _Made]
# A memo starts again past this many customers.
_MOST_MADE = 20_000


def load_billing_customers(
    connection: Connection,
    catalog: Catalog,
    customer_ids: Iterable[str],
    now: datetime,
    made: CustomersMade | None = None,
    spend_caps: dict[str, int] | None = None,
) -> dict[str, BillingCustomer]:
    """Return the live customers among `customer_ids` with their plan, status and period
    (`made`: customers made before, kept and reused where their rows are unchanged; given
    `spend_caps`, fill it with theirs, read with their deals)."""
    found: dict[str, BillingCustomer] = {}
    for rows in billing_queries.customer_rows(connection, customer_ids):
        customer_id = rows[0][0]
        kept = made.get(customer_id) if made is not None else None
        if (
            kept is not None
            and kept.catalog is catalog
            and kept.rows == rows
            and kept.customer.period.start <= now < kept.customer.period.end
        ):
            found[customer_id] = kept.customer
            continue
        customer, subscriptions = billing_queries.customer_of_rows(connection.dialect, rows)
        held = max(subscriptions, key=_holding_order) if subscriptions else None
        billing = found[customer_id] = _billing_customer(catalog, customer, held, now)
        if made is not None:
            if len(made) >= _MOST_MADE:
                made.clear()
            made[customer_id] = _Made(catalog, rows, billing)
    if found:
        live = {c.id: c.subscription_id for c in found.values() if c.subscription_id}
        dealt = deal_queries.deals_of(connection, list(found), now, live, spend_caps)
        for customer_id, deals in dealt.items():
            found[customer_id] = replace(found[customer_id], deals=deals)
    return found


def _holding_order(subscription: Any) -> tuple[int, datetime, str]:
    # The same order as customers.current_subscription: live first, then newest.
    return (
        0 if subscription.status in ENDED_STATUSES else 1,
        subscription.created_at,
        subscription.id,
    )


def _billing_customer(
    catalog: Catalog, row: Any, subscription: Any | None, now: datetime
) -> BillingCustomer:
    live = subscription is not None and subscription.status not in ENDED_STATUSES
    held: Any = subscription if live else None
    derived = plan_of(row, subscription, catalog.default_plan)
    period = open_period(
        held.current_period_start if held is not None else None,
        held.current_period_end if held is not None else None,
        now,
    )
    currency, _ = customer_currency(
        fixed=row.currency or (subscription.currency if subscription is not None else None),
        requested=row.requested_currency,
        catalog_currency=catalog.currency,
    )
    # The grace of a past-due subscription counts from the start of the period whose invoice
    # is unpaid: a fact of the mirror that does not depend on the order events arrived in.
    past_due_since = (
        held.current_period_start if held is not None and derived.status == "past_due" else None
    )
    return BillingCustomer(
        id=row.id,
        plan=derived.plan,
        status=derived.status,
        period=period,
        interval=held.interval if held is not None else None,
        currency=currency,
        seats=held.seats if held is not None else None,
        stripe_customer_id=row.stripe_customer_id,
        stripe_account=row.stripe_account,
        offline=row.offline,
        dunning_access=row.dunning_access,
        processing_access=row.processing_access,
        dispute_access=row.dispute_access,
        past_due_since=past_due_since,
        plan_version=_plan_version(held, derived.plan),
        subscription_id=held.id if held is not None else None,
    )


def _plan_version(subscription: Any | None, plan: str | None) -> int | None:
    """Return the live subscription's plan version when it is the plan the customer is on."""
    if subscription is None or subscription.plan != plan:
        return None
    return int(subscription.plan_version or 1)


def period_usage(connection: Connection, customer_id: str, period: Period) -> dict[str, int]:
    """Return the customer's usage per meter in the period (with pending usage folded in)."""
    return period_position(connection, customer_id, period)[0]


def period_position(
    connection: Connection, customer_id: str, period: Period
) -> tuple[dict[str, int], dict[str, int]]:
    """Return the customer's usage and the units reservations hold, per meter, in the period."""
    rows = usage_queries.period_usage_rows(connection, customer_id, period.start)
    return usage_with_pending(rows), held_with_pending(rows)


def credit_prices(catalog: Catalog) -> dict[str, int]:
    """Return the credits each unit of a credit-priced metered feature costs."""
    prices: dict[str, int] = {}
    for feature_id, feature in catalog.features.items():
        if feature.type is FeatureType.METERED and feature.credits_per_unit:
            prices[feature_id] = feature.credits_per_unit
    return prices


def read_entitlements(
    connection: Connection,
    *,
    catalog: Catalog,
    customer_id: str,
    now: datetime,
    grace: timedelta,
) -> Entitlements:
    """Return the customer's entitlements as the database has them now."""
    customer = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id!r}", param="customer")
    prices = credit_prices(catalog)
    balance, allowance = credit_position(connection, customer_id, now) if prices else (0, 0)
    used, held = period_position(connection, customer_id, customer.period)
    cap = usage_controls_queries.spend_caps(connection, [customer_id]).get(customer_id)
    state = customer_state(
        customer,
        used,
        credit_balance=balance,
        credit_allowance=allowance,
        held=held,
        spend_cap=cap,
    )
    return entitlements(catalog, state, now=now, grace=grace, credit_prices=prices)


def customer_state(
    customer: BillingCustomer,
    usage: Mapping[str, int],
    *,
    credit_balance: int = 0,
    credit_allowance: int = 0,
    held: Mapping[str, int] | None = None,
    spend_cap: int | None = None,
) -> CustomerState:
    """Return what the entitlement decision needs of a customer, with its usage and credits."""
    return CustomerState(
        customer_id=customer.id,
        plan=customer.plan,
        status=customer.status,
        period=customer.period,
        interval=customer.interval,
        currency=customer.currency,
        usage=usage,
        seats=customer.seats,
        past_due_since=customer.past_due_since,
        dunning_access=customer.dunning_access,
        processing_access=customer.processing_access,
        dispute_access=customer.dispute_access,
        credit_balance=credit_balance,
        credit_allowance=credit_allowance,
        held=held or {},
        plan_version=customer.plan_version,
        spend_cap=spend_cap,
        deals=customer.deals,
    )


def credit_position(connection: Connection, customer_id: str, now: datetime) -> tuple[int, int]:
    """Return the credits the customer may spend `now` (lots past expiry don't count) and the
    overdraft allowance."""
    position = credit_ledger.credit_position(connection, customer_id, now=now)
    return int(position.balance), int(position.allowance)


# -- the cache -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    granted: Entitlements
    expires: float  # time.monotonic() after which the entry is reloaded
    valid_until: datetime  # the clock time after which time alone changes the answer
    decisions: dict[tuple[str, int, int | None], Decision]
    read: bool = False  # read since it was loaded (the background refresher renews such entries)
    # The decisions and the entitlements as the API answers them, encoded once (`check_json`).
    answers: dict[tuple[str, int, int | None], bytes] = field(default_factory=dict)
    answer: bytes | None = None


class EntitlementCache:
    """Entitlements per customer, cached in this process and dropped when they change."""

    def __init__(
        self,
        *,
        db: Database,
        catalog: Catalog,
        clock: Clock,
        grace: timedelta,
        ttl: float = 1.0,
        refresh_interval: float = 0.01,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.clock = clock
        self.grace = grace
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self._entries: dict[str, _Entry] = {}
        self._refresh_lock = threading.Lock()
        self._next_refresh = 0.0
        self._seen: dict[int, None] = {}  # recent feed sequence numbers, oldest first
        self._last_seq: int | None = None
        self._drops: dict[str, int] = {}  # per customer: how often its entry was dropped
        self._asked = False  # a request read the cache since the refresher's last round
        self._inline_lag = 0.0  # how late the refresher may be before a request looks itself
        self._background = BackgroundLoop("tollgate-entitlements", self._refresh_forever)
        self.loads = 0

    # -- reading ----------------------------------------------------------------------------

    def entitlements(self, customer_id: str) -> Entitlements:
        """Return the customer's entitlements, from the cache when still true."""
        entry = self._read_entry(customer_id)
        return entry.granted

    def check(
        self, customer_id: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> Decision:
        """Return whether the customer may use `quantity` more of `feature` now."""
        entry = self._read_entry(customer_id)
        key = (feature, quantity, in_use)
        # The hit looked up here, not in `_decide`: a call more costs a cached check 3 %.
        decision = entry.decisions.get(key)
        return decision if decision is not None else self._decide(entry, key)

    def check_json(
        self, customer_id: str, feature: str, quantity: int = 1, *, in_use: int | None = None
    ) -> bytes:
        """Return `check`'s decision as the API answers it (JSON), encoded once per entry."""
        entry = self._read_entry(customer_id)
        key = (feature, quantity, in_use)
        answer = entry.answers.get(key)
        if answer is None:
            answer = entry.answers[key] = orjson.dumps(self._decide(entry, key).to_json())
        return answer

    def entitlements_json(self, customer_id: str) -> bytes:
        """Return `entitlements` as the API answers them (JSON), encoded once per entry."""
        entry = self._read_entry(customer_id)
        if entry.answer is None:
            entry.answer = orjson.dumps(entry.granted.to_json())
        return entry.answer

    def _decide(self, entry: _Entry, key: tuple[str, int, int | None]) -> Decision:
        decision = entry.decisions.get(key)
        if decision is None:
            feature, quantity, in_use = key
            if feature not in entry.granted.features:
                self.catalog.feature(feature)  # raises NotFound naming the features
            decision = entry.granted.decide(feature, quantity, in_use=in_use)
            entry.decisions[key] = decision
        return decision

    def cached(self, customer_id: str) -> Entitlements | None:
        """Return the cached entry without loading or refreshing (for tests and metrics)."""
        entry = self._entries.get(customer_id)
        return entry.granted if entry else None

    def _read_entry(self, customer_id: str) -> _Entry:
        """Return the customer's entry, still true (loaded again where not), marked read."""
        now_mono = time.monotonic()
        self._asked = True
        if now_mono >= self._next_refresh + self._inline_lag:
            self.refresh(now_mono)  # no refresher, or an idle one that is asleep: look now
        entry = self._entries.get(customer_id)
        if entry is None or now_mono >= entry.expires or self.clock.now() >= entry.valid_until:
            entry = self._load(customer_id, now_mono)
        entry.read = True
        return entry

    def _load(self, customer_id: str, now_mono: float) -> _Entry:
        drops = self._drops.get(customer_id, 0)
        now = self.clock.now()
        with self.db.engine.connect() as connection:
            granted = read_entitlements(
                connection,
                catalog=self.catalog,
                customer_id=customer_id,
                now=now,
                grace=self.grace,
            )
            connection.rollback()
        self.loads += 1
        entry = _Entry(granted, now_mono + self.ttl, granted.valid_until, {})
        if self._drops.get(customer_id, 0) != drops:
            # Dropped while it was read (another thread's change committed meanwhile): answer
            # this once, and read again next time rather than keep what may be stale.
            entry.expires = now_mono
        self._entries[customer_id] = entry
        return entry

    # -- invalidation -----------------------------------------------------------------------

    def forget(self, customer_ids: Iterable[str]) -> None:
        """Drop the customers' cached entries (after this process changed them)."""
        for customer_id in customer_ids:
            self._drop(customer_id)

    def clear(self) -> None:
        for customer_id in list(self._entries):
            self._drop(customer_id)

    def use_catalog(self, catalog: Catalog) -> None:
        """Decide with a newer catalog from now on; decisions made under the old one go."""
        self.catalog = catalog
        self.clear()

    def _drop(self, customer_id: str) -> None:
        self._drops[customer_id] = self._drops.get(customer_id, 0) + 1
        self._entries.pop(customer_id, None)

    def refresh(self, now_mono: float | None = None) -> None:
        """Drop entries of customers that changed since the last look at the change feed."""
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is looking; this read uses the cache as it is
        try:
            now_mono = time.monotonic() if now_mono is None else now_mono
            self._next_refresh = now_mono + self.refresh_interval
            with self.db.engine.connect() as connection:
                if self._last_seq is None:
                    self._last_seq = last_change(connection)
                    self.clear()
                    connection.rollback()
                    return
                # Sequence numbers can commit out of order on PostgreSQL: look back a little
                # and skip what was seen already.
                rows = customers_changed_after(connection, self._last_seq - _LOOK_BACK)
                connection.rollback()
            for seq, customer_id in rows:
                if seq in self._seen:
                    continue
                self._seen[seq] = None
                self._drop(customer_id)
                if seq > self._last_seq:
                    self._last_seq = seq
            while len(self._seen) > 4 * _LOOK_BACK:
                del self._seen[next(iter(self._seen))]
        finally:
            self._refresh_lock.release()

    # -- the background refresher (servers) --------------------------------------------------

    def start_background(self) -> None:
        """Look at the change feed and renew entries in a thread, off the request path.

        A server answers checks on its event loop; a database read there (the feed every few
        milliseconds, an entry at the end of its TTL) holds every other request up for a round
        trip. With the refresher running, requests read the feed never and load only what was
        never cached: entries that were read are renewed before their TTL runs out.
        """
        if self._background.running:
            return
        self._inline_lag = 2 * self.refresh_interval
        self._background.start()

    def stop_background(self) -> None:
        self._background.stop()
        self._inline_lag = 0.0

    def _refresh_forever(self, stop: threading.Event) -> None:
        # While requests come, every `refresh_interval`; idle, ten times a second (the first
        # request after a pause looks at the feed itself, so it never reads a dropped entry).
        pause = self.refresh_interval
        while not stop.wait(pause):
            pause = self.refresh_interval if self._asked else max(0.1, self.refresh_interval)
            self._asked = False
            try:
                self.refresh()
                self._renew(time.monotonic())
            except Exception:  # the next round tries again; requests fall back to loading
                log.exception("entitlement cache refresh failed")

    def _renew(self, now_mono: float) -> None:
        """Reload entries read since their load whose TTL runs out within a quarter of it.

        A few per round, soonest first: entries loaded together (a server's first seconds) would
        otherwise be renewed together, holding the interpreter from requests for a burst.
        """
        soon = now_mono + self.ttl / 4
        due = [
            (entry.expires, customer_id)
            for customer_id, entry in list(self._entries.items())
            if entry.read and entry.expires <= soon
        ]
        for _, customer_id in sorted(due)[:_RENEW_PER_ROUND]:
            self._load(customer_id, now_mono)


_LOOK_BACK = 256
_RENEW_PER_ROUND = 8
log = logging.getLogger("tollgate.entitlements")
