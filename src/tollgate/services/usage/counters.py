"""Where usage is counted: one interface over the database's counters and Redis's.

`record_usage` runs one decision loop over a batch and leaves to a `CounterStore` only what
differs between the two: when the counters are taken (the database locks them before the
batch's ids are checked; Redis checks and counts every new event in one script after), how an
event is found to fit its hard limit, what a refused event costs (nothing in the database;
Redis gives the count back), and what the store writes with the events (the database: the
counters and the overage for Stripe; Redis: one pending row per counter, and after the commit
the warning levels now recorded). Each counter a batch touches is a `Tally` both fill in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection

from tollgate.db.queries.usage import CounterId, EventRow
from tollgate.domain.catalog import Aggregation, Catalog, Plan, PlanFeature
from tollgate.domain.deals import plan_with_deals
from tollgate.domain.entitlements import (
    CustomerState,
    access_of,
    access_plan,
    spend_cap_limits,
)
from tollgate.domain.metering import Counter, Period
from tollgate.services.entitlements import BillingCustomer, customer_state, period_position
from tollgate.services.usage.events import Event


@dataclass(eq=False, slots=True)
class Tally:
    """One counter as a batch moves it: whose, what the plan grants, its value before and now."""

    customer: BillingCustomer
    period: Period  # the counter's (the customer's open one, or an ended one being folded)
    meter: str
    aggregation: Aggregation
    grant: PlanFeature
    limit: int | None  # the hard limit this batch holds the counter to (None: none)
    counter: Counter = field(default_factory=lambda: Counter(0))
    before: int = 0
    held: int = 0  # units reservations hold on the counter, as the batch leaves them
    spend_cap: int | None = None  # the customer's, when it set `limit` (minor units)
    # A plan's rate limit: at most `window_limit` within each fixed window of `window_seconds`
    # (0: none); the current window's start and what was counted in it.
    window_seconds: int = 0
    window_limit: int | None = None
    window_start: datetime | None = None
    window_value: int = 0
    reported: int = 0  # overage units already queued for Stripe (the database's counters)
    # The highest warning percent known to be recorded this period; None: the levels `before`
    # reached (the database's counters record a level in the transaction that reaches it).
    warned: int | None = None
    latest: datetime | None = None  # the latest time counted into `counter` here (the database's)
    accepted: int = 0  # how many of this batch's events were counted here
    # Whether the customer may have a usage alert on the meter (False: the counter's lock saw
    # none, in the batch's transaction; the alerts are then not looked for).
    alerts: bool = True

    @property
    def key(self) -> CounterId:
        return (self.customer.id, self.meter, self.period.start)


# A batch's tallies by (customer id, meter): a customer counts in one period per batch.
Tallies = Mapping[tuple[str, str], Tally]


class CounterBatch(Protocol):
    """One batch's counters in a store, from before its ids are checked to its commit."""

    # Whether `lock` makes the batch wait for any other batch counting in the same counters
    # until that one ends (the database's row locks), so the ids look sees what it recorded.
    waits_for_recorders: bool

    def lock(self, connection: Connection, tallies: Sequence[Tally], now: datetime) -> None:
        """Take the batch's counters (in key order) before its ids are checked."""

    def check(
        self, connection: Connection, tallies: Tallies, events: Sequence[Event], now: datetime
    ) -> None:
        """Look at the batch's new events, in order, once they are known."""

    def fits(self, tally: Tally, event: Event) -> bool:
        """Return whether the event fits its counter's hard limit (asked only of counters with
        a hard or rate limit, or a credit price: every event fits one with none)."""

    def count(self, tally: Tally, event: Event) -> None:
        """Count an event that fits and was paid for."""

    def refuse(self, tally: Tally, event: Event) -> None:
        """Take back an event that fit but is refused (its credits are used up)."""

    def write(
        self,
        connection: Connection,
        moved: Sequence[Tally],
        events: Sequence[EventRow],
        now: datetime,
    ) -> int:
        """Store the batch's accepted events and write what the store keeps in the database
        with them; return how many events were new (fewer than given: another batch recorded
        some first, and the caller decides the batch again: nothing more need be written)."""


class CounterStore(Protocol):
    """Where a deployment counts usage: the database, or Redis (TOLLGATE_REDIS_URL)."""

    def batch(self) -> AbstractContextManager[CounterBatch]:
        """Return the counters of one batch, around its transaction."""


@dataclass(slots=True)
class GrantMemo:
    """Grants by everything that decides them but the catalog and the grace (the memo's own:
    it starts again when either changes), for one batch or kept from batch to batch (a consume
    writer's): plan and its version, status, the accesses dunning, a bank debit and disputes
    hold the customer at, and past due since with whether the grace period still runs then.
    Customers with a deal are not memoized."""

    catalog: Catalog | None = None
    grace: timedelta | None = None
    found: dict[tuple[Any, ...], dict[str, PlanFeature]] = field(default_factory=dict)


# A memo starts again past this many entries (past due since is a customer's own).
_MOST_GRANTS = 10_000


def granted(
    catalog: Catalog,
    customer: BillingCustomer,
    now: datetime,
    grace: timedelta,
    memo: GrantMemo | None = None,
) -> dict[str, PlanFeature]:
    """Return what the customer's access plan grants of each feature now."""
    if memo is not None and not customer.deals:
        if memo.catalog is not catalog or memo.grace != grace or len(memo.found) >= _MOST_GRANTS:
            memo.catalog, memo.grace, memo.found = catalog, grace, {}
        since = customer.past_due_since
        key = (
            customer.plan,
            customer.plan_version,
            customer.status,
            customer.dunning_access,
            customer.processing_access,
            customer.dispute_access,
            since,
            since is not None and now < since + grace,  # what time changes (see access_of)
        )
        found = memo.found.get(key)
        if found is None:
            found = memo.found[key] = granted(catalog, customer, now, grace)
        return found
    catalog = catalog.with_plan_version(customer.plan, customer.plan_version)
    plan = _plan_in_force(catalog, customer, customer_state(customer, {}), now, grace)
    return {
        feature_id: (plan.features.get(feature_id) if plan else None) or PlanFeature.off(feature)
        for feature_id, feature in catalog.features.items()
    }


def capped_limits(
    connection: Connection,
    catalog: Catalog,
    customer: BillingCustomer,
    cap: int,
    now: datetime,
    grace: timedelta,
) -> dict[str, int]:
    """Return the hard limit the customer's spend cap puts on each soft feature now: the units
    whose overage fits what the cap leaves after the other features' overage this period.

    The other features' usage is read as committed: a batch counting overage of another feature
    at the same moment is not waited for (a cap shared by several priced features may be passed
    by what those concurrent batches add; with one priced feature it holds to the minor unit).
    """
    used, held = period_position(connection, customer.id, customer.period)
    state = customer_state(customer, used, held=held, spend_cap=cap)
    catalog = catalog.with_plan_version(customer.plan, customer.plan_version)
    return spend_cap_limits(catalog, _plan_in_force(catalog, customer, state, now, grace), state)


def _plan_in_force(
    catalog: Catalog,
    customer: BillingCustomer,
    state: CustomerState,
    now: datetime,
    grace: timedelta,
) -> Plan | None:
    """The plan the customer's access gives it now (the catalog already at its plan version),
    with the customer's own deal on top (issue 20)."""
    access, _ = access_of(state, grace, now)
    plan = access_plan(catalog, state, access)
    if plan is not None and customer.deals:
        plan = plan_with_deals(plan, customer.deals, now, catalog.addons)
    return plan
