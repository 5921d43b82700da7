"""Consume: decide and record uses of a feature in one step, exactly once per id.

`consume_many` sends a group of uses (one call's, or many concurrent requests' gathered by the
server's writer: group commit) through the one recorder (`record_usage`, whichever counter
store the deployment counts in) as one batch: the hard-limit check and the increment are the
recorder's single atomic step, taken in the batch's order, so concurrent calls from any number
of processes never overshoot a limit. Each answer (allowed or not, with the entitlement
decision's reason) is stored with its id in the batch's transaction; a retry with the id
returns the stored answer, a denied one included, and counts nothing again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, FeatureType
from tollgate.domain.entitlements import UseTerms, entitlements, use_terms
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError
from tollgate.services.entitlements import BillingCustomer, CustomersMade, customer_state
from tollgate.services.group_commit import GroupWriter
from tollgate.services.usage.counters import CounterStore, GrantMemo, Tallies, Tally
from tollgate.services.usage.events import MAX_ID_LENGTH, Rejection, UsageReport
from tollgate.services.usage.recording import record_usage
from tollgate_client.decisions import Code, Decision

# At most this many calls share a transaction: enough to amortise its fixed cost, few enough
# that the first of a group does not wait long for the last.
GROUP = 128
# Under load, the writer waits after a shared commit for the callers it answered to come back
# with their next calls (GroupWriter: at most this long; an eighth of it for a while once they
# did not), so they share one commit. Over HTTP from 32 connections the event loop needs about
# 50 µs of CPU a call to answer one and read the next, some 2 ms for a group of 32 on a quiet
# machine (traces on a machine at load 7-10 took 4-5 ms: hence the margin). The fixed 500 µs
# wait it replaces made groups of 26-27 calls with the server at 78 % of a core, and took what
# queued during a commit as a small group of its own; 250 µs made groups of 17, 1 ms fewer
# consumes a second. Stripe's deliveries do not wait: their groups were already half of what
# was in flight.
LINGER = 0.005
# A batch is decided again without the ids another call answered first; each round drops at
# least one id, and such races are rare, so a few rounds suffice.
_ROUNDS = 8


class _Answered(Exception):
    """Some ids have a stored answer: the batch is rolled back and decided again without them."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__(", ".join(sorted(ids)))
        self.ids = ids


class ConsumeCall(NamedTuple):
    """One use to decide: `quantity` of `feature` for `customer_id`, once per `id`.

    A named tuple, not a frozen dataclass: every request makes one, and a frozen dataclass
    sets each field through `object.__setattr__`.
    """

    customer_id: str
    feature: str
    quantity: int
    id: str


class Consumed:
    """A consume answer: the decision, and whether it is the stored answer of an earlier call.

    Made for every call, so made cheaply: a class of slots, not a frozen dataclass (whose
    `__init__` sets each field through `object.__setattr__`), and an allowed call's decision
    is kept as its JSON (`decided`, made to be stored) and made a `Decision` only when asked:
    the HTTP answer is the JSON, and a frozen `Decision` of eight fields costs about 2.7 µs to
    make. Not to be changed once made."""

    __slots__ = ("_decision", "customer", "decided", "id", "quantity", "replayed")

    def __init__(
        self,
        id: str,
        customer: str,
        quantity: int,
        decision: Decision | None,
        replayed: bool = False,
        decided: dict[str, Any] | None = None,
    ) -> None:
        """`decision` or `decided` (the decision as JSON, when it was made so) or both."""
        assert decision is not None or decided is not None
        self.id = id
        self.customer = customer
        self.quantity = quantity
        self.replayed = replayed
        self.decided = decided
        self._decision = decision

    @property
    def decision(self) -> Decision:
        decision = self._decision
        if decision is None:
            assert self.decided is not None
            decision = self._decision = Decision.from_json(self.decided)
        return decision

    @property
    def allowed(self) -> bool:
        """The decision's `allowed`, without making the decision."""
        return bool(self.decided["allowed"] if self.decided is not None else self.decision.allowed)

    def to_json(self) -> dict[str, Any]:
        decided = self.decided if self.decided is not None else self.decision.to_json()
        return {"id": self.id, "customer": self.customer, "quantity": self.quantity, **decided}

    def __repr__(self) -> str:
        return (
            f"Consumed(id={self.id!r}, customer={self.customer!r}, quantity={self.quantity!r}, "
            f"decision={self.decision!r}, replayed={self.replayed!r})"
        )


def consume(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    customer_id: str,
    feature: str,
    quantity: int,
    consumption_id: str,
    grace: timedelta = timedelta(days=7),
    counters: CounterStore | None = None,
) -> Consumed:
    """Use `quantity` of a metered feature if the customer may: allowed and counted, or denied
    with the reason and nothing counted; once per `consumption_id`."""
    call = ConsumeCall(customer_id, feature, quantity, consumption_id)
    (outcome,) = consume_many(
        db=db, catalog=catalog, clock=clock, calls=[call], grace=grace, counters=counters
    )
    if isinstance(outcome, TollgateError):
        raise outcome
    return outcome


def consume_many(
    *,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    calls: Sequence[ConsumeCall],
    grace: timedelta = timedelta(days=7),
    counters: CounterStore | None = None,
    kept: Kept | None = None,
) -> list[Consumed | TollgateError]:
    """Decide and record the calls in order in one transaction: each one's answer, or the
    error that call alone gets (a bad call, an unknown customer, an id used otherwise).
    `kept`: what a writer keeps from its earlier groups."""
    outcomes: list[Consumed | TollgateError | None] = [None] * len(calls)
    first: dict[str, int] = {}  # id -> the call deciding it; a repeat in the group replays it
    for index, call in enumerate(calls):
        try:
            _check(catalog, call)
        except InvalidRequest as error:
            outcomes[index] = error
            continue
        first.setdefault(call.id, index)
    deciding = sorted(set(first.values()))
    answers: dict[int, tuple[Decision | None, dict[str, Any]]] = {}
    report = UsageReport()
    for _ in range(_ROUNDS):
        answers.clear()
        try:
            report = _record(db, catalog, clock, grace, counters, calls, deciding, answers, kept)
        except _Answered as answered:
            # Answered by another call between our look and our insert: stored answers below.
            deciding = [i for i in deciding if calls[i].id not in answered.ids]
            continue
        break
    else:
        raise AssertionError("consume: ids kept being answered by other calls")
    unknown: set[int] = set()  # calls refused before any decision, and why
    for rejection in report.rejected:
        if rejection.index in report.moves:
            continue  # decided: denied, with the reason in its answer
        index = deciding[rejection.index]
        unknown.add(index)
        outcomes[index] = (
            NotFound(f"no customer {calls[index].customer_id!r}", param="id")
            if rejection.code == "unknown_customer"
            else InvalidRequest(rejection.message)
        )
    for index, (decision, decided) in answers.items():
        call = calls[index]
        outcomes[index] = Consumed(
            call.id, call.customer_id, call.quantity, decision, decided=decided
        )
    # The rest were answered before (a retry), by a repeat of the id in this group, or are ids
    # POST /v1/usage recorded: their stored answers, read in one look.
    rest = [i for i, outcome in enumerate(outcomes) if outcome is None and i not in unknown]
    if rest:
        with db.engine.connect() as connection:
            stored = queries.consumptions(connection, sorted({calls[i].id for i in rest}))
            connection.rollback()
        for index in rest:
            if index != first[calls[index].id] and first[calls[index].id] in unknown:
                outcomes[index] = outcomes[first[calls[index].id]]
            else:
                outcomes[index] = _stored(calls[index], stored.get(calls[index].id))
    return [outcome for outcome in outcomes if outcome is not None]  # each call has one


def _record(
    db: Database,
    catalog: Catalog,
    clock: Clock,
    grace: timedelta,
    counters: CounterStore | None,
    calls: Sequence[ConsumeCall],
    deciding: list[int],
    answers: dict[int, tuple[Decision | None, dict[str, Any]]],
    kept: Kept | None,
) -> UsageReport:
    """Record the deciding calls as one batch (event i is call deciding[i]); fill `answers`
    (each decision, with its JSON as stored)."""
    memo: TermsMemo = {} if kept is None else kept.terms

    def decided(
        connection: Connection, tallies: Tallies, report: UsageReport, now: datetime
    ) -> None:
        refused = {rejection.index: rejection for rejection in report.rejected}
        rows: list[queries.NewConsumption] = []
        for event_index, (before, after) in report.moves.items():
            index = deciding[event_index]
            call = calls[index]
            tally = tallies[(call.customer_id, call.feature)]
            rejection = refused.get(event_index) if refused else None
            answer = answers[index] = _answer(
                catalog, tally, before, after, rejection, call.quantity, now, grace, memo
            )
            decided = answer[1]
            rows.append(
                (
                    call.id,
                    call.customer_id,
                    call.feature,
                    call.quantity,
                    decided["allowed"],
                    decided,
                )
            )
        stored = queries.insert_consumptions(connection, rows, now)
        if len(stored) != len(rows):
            # A retry of a denied call (its id was never an event), or a call racing it: roll
            # back what was counted and decide the batch again without those ids.
            raise _Answered({row[0] for row in rows} - stored)

    # No look for stored answers first, nor for recorded ids (two queries saved per batch):
    # each call has a new id but for a retry, rare, which the recorder's insert finds (the
    # batch is recorded again with the look, which drops it as a duplicate); a denied one is
    # decided again and rolled back above. Not with Redis counters: its script would count a
    # retry's event before the insert finds it (given back, but seen by others meanwhile).
    uses = [(c.id, c.customer_id, c.feature, c.quantity) for c in map(calls.__getitem__, deciding)]
    if not uses:
        return UsageReport()
    return record_usage(
        db=db,
        catalog=catalog,
        clock=clock,
        events=None,
        uses=uses,
        grace=grace,
        counters=counters,
        decided=decided,
        new_ids=counters is None,
        made=None if kept is None else kept.customers,
        grants=None if kept is None else kept.grants,
    )


def _check(catalog: Catalog, call: ConsumeCall) -> None:
    known = catalog.features.get(call.feature)
    if known is None or known.type is not FeatureType.METERED:
        metered = sorted(f for f, v in catalog.features.items() if v.type is FeatureType.METERED)
        raise InvalidRequest(
            f"unknown metered feature {call.feature!r}; metered features are: {', '.join(metered)}",
            param="feature",
        )
    quantity = call.quantity
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise InvalidRequest("quantity must be a whole number, 0 or more", param="quantity")
    if quantity >= 2**53:
        raise InvalidRequest("quantity is too large", param="quantity")
    if not call.id or len(call.id) > MAX_ID_LENGTH:
        raise InvalidRequest(f"id must be 1 to {MAX_ID_LENGTH} characters", param="id")


def _stored(call: ConsumeCall, row: Any | None) -> Consumed | TollgateError:
    if row is None:
        return Conflict(
            f"id {call.id!r} was recorded as a usage event (POST /v1/usage), not by "
            "consume; use a new id",
            param="id",
        )
    if (row.customer_id, row.feature, int(row.quantity)) != (
        call.customer_id,
        call.feature,
        call.quantity,
    ):
        return Conflict(
            f"id {call.id!r} was used for {int(row.quantity):,} {row.feature} of "
            f"customer {row.customer_id!r}; a retry must repeat the same call",
            param="id",
        )
    return Consumed(
        call.id, call.customer_id, call.quantity, Decision.from_json(row.answer), replayed=True
    )


class _Terms(NamedTuple):
    """A customer's terms for a feature, and what they were worked out from."""

    catalog: Catalog
    customer: BillingCustomer
    grace: timedelta
    terms: UseTerms | None  # None: every use is decided in full


# Customers' terms by (customer id, feature): a consume writer keeps them from group to group
# (each group reads its customers afresh; terms are used while those equal what they were
# worked out from, and until they expire), so a call's answer is not worked out in full.
TermsMemo = dict[tuple[str, str], _Terms]
# A writer's memo starts again past this many entries.
_MOST_TERMS = 20_000


@dataclass
class Kept:
    """What a consume writer keeps from group to group, each checked against what the group
    reads before use: its customers as made from their rows, their grants (by what decides
    them, see `GrantMemo`), and their terms."""

    customers: CustomersMade = field(default_factory=dict)
    grants: GrantMemo = field(default_factory=GrantMemo)
    terms: TermsMemo = field(default_factory=dict)


def _answer(
    catalog: Catalog,
    tally: Tally,
    before: int,
    after: int,
    refused: Rejection | None,
    quantity: int,
    now: datetime,
    grace: timedelta,
    memo: TermsMemo,
) -> tuple[Decision | None, dict[str, Any]]:
    """Return the answer of one event (None when made as JSON only), and as JSON: the
    entitlement decision against the counter's value before it, with `used` and `remaining`
    as they are after it."""
    if refused is None and tally.spend_cap is None:
        terms = _terms(memo, catalog, tally, now, grace)
        words = terms.words(before, quantity, tally.held) if terms is not None else None
        if words is not None:  # what the full decision below gives, from kept terms
            assert terms is not None
            return _counted(terms.feature, words[0], terms.limit, words[1], tally, after)
    decision = _decision(catalog, tally, before, refused, quantity, now, grace)
    if refused is None:  # counted: allowed, whatever the decision says (the recorder's word)
        d = decision
        return _counted(d.feature, d.reason, d.limit, d.warning, tally, after)
    return decision, decision.to_json()


def _decision(
    catalog: Catalog,
    tally: Tally,
    before: int,
    refused: Rejection | None,
    quantity: int,
    now: datetime,
    grace: timedelta,
) -> Decision:
    """Return the entitlement decision of one event, in full, against the counter's value
    before it (`used` and `remaining` as they are before it)."""
    if refused is not None and refused.code == "insufficient_credits":
        return Decision(
            allowed=False,
            feature=tally.meter,
            reason=refused.message,
            code=Code.INSUFFICIENT_CREDITS,
            limit=tally.grant.limit,
            used=before,
            remaining=None,
        )
    state = customer_state(
        tally.customer, {tally.meter: before}, held=_held(tally), spend_cap=tally.spend_cap
    )
    granted = entitlements(catalog, state, now=now, grace=grace, only=tally.meter)
    decision = granted.decide(tally.meter, quantity)
    if refused is not None and decision.allowed:
        # The recorder's word is final: it saw the counter under its lock.
        decision = dataclasses.replace(
            decision, allowed=False, code=Code.LIMIT_EXCEEDED, reason=refused.message
        )
    return decision


def _counted(
    feature: str, reason: str, limit: int | None, warning: str | None, tally: Tally, after: int
) -> tuple[None, dict[str, Any]]:
    """Return an allowed answer with `used` and `remaining` as the counter is `after` it, as
    JSON only (`Decision.to_json`'s, made here: each allowed call of a group is made here; the
    `Decision` is made from it only when asked, see `Consumed`). Keys in Decision's order, as
    its API fixes it."""
    room = limit if limit is not None else tally.grant.included
    remaining = None if room is None else max(0, room - after - tally.held)
    return None, {
        "allowed": True,
        "feature": feature,
        "reason": reason,
        "code": _ALLOWED,
        "limit": limit,
        "used": after,
        "remaining": remaining,
        "warning": warning,
    }


_ALLOWED = Code.ALLOWED.value


def _terms(
    memo: TermsMemo, catalog: Catalog, tally: Tally, now: datetime, grace: timedelta
) -> UseTerms | None:
    """Return the tally's customer's terms for its feature: kept, or worked out and kept."""
    key = (tally.customer.id, tally.meter)
    kept = memo.get(key)
    if (
        kept is not None
        and kept.catalog is catalog
        and kept.grace == grace
        and (kept.customer is tally.customer or kept.customer == tally.customer)
        and (kept.terms is None or now < kept.terms.valid_until)
    ):
        return kept.terms
    state = customer_state(tally.customer, {})
    terms = use_terms(catalog, state, tally.meter, now=now, grace=grace)
    if len(memo) >= _MOST_TERMS:
        memo.clear()
    memo[key] = _Terms(catalog, tally.customer, grace, terms)
    return terms


def _held(tally: Tally) -> dict[str, int]:
    return {tally.meter: tally.held} if tally.held else {}


class ConsumeWriter:
    """A process's consume calls, decided and committed in groups by one writer thread.

    Concurrent requests each wait for their group's commit (see services/group_commit.py), so
    a transaction and its fixed cost (the customers read, the counters locked, one commit) are
    shared by every call waiting at that moment; each answer is given only once it is stored.
    """

    def __init__(
        self,
        *,
        db: Database,
        catalog: Callable[[], Catalog],
        clock: Clock,
        grace: timedelta,
        counters: CounterStore | None,
        on_change: Callable[[Sequence[str]], None],
    ) -> None:
        self._db = db
        self._catalog = catalog
        self._clock = clock
        self._grace = grace
        self._counters = counters
        self._on_change = on_change
        self._kept = Kept()
        self._writer: GroupWriter[ConsumeCall, Consumed] = GroupWriter(
            db, self._apply, name="tollgate-consume", group=GROUP, linger=LINGER
        )

    def consume(self, call: ConsumeCall) -> Awaitable[Consumed]:
        """Decide and record the call with whatever others are waiting; raise its error.

        Plain, not async: it hands back the writer's own awaitable, one coroutine less a call.
        """
        return self._writer.apply(call)

    def consume_blocking(self, call: ConsumeCall) -> Consumed:
        """`consume` for a thread (an in-process client)."""
        return self._writer.apply_blocking(call)

    def groups(self) -> tuple[int, int]:
        """Return how many groups were committed so far, and how many calls they held."""
        return self._writer.applied

    def close(self) -> None:
        self._writer.stop()

    def _apply(self, calls: list[ConsumeCall]) -> list[Consumed | TollgateError]:
        outcomes = consume_many(
            db=self._db,
            catalog=self._catalog(),
            clock=self._clock,
            calls=calls,
            grace=self._grace,
            counters=self._counters,
            kept=self._kept,
        )
        changed = {o.customer for o in outcomes if isinstance(o, Consumed) and not o.replayed}
        if changed:  # this process's cached decisions go before any answer is given
            self._on_change(sorted(changed))
        return outcomes
