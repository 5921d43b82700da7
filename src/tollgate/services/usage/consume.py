"""Consume: decide and record one use of a feature in one step, exactly once per id.

`consume` sends the use through the one recorder (`record_usage`, whichever counter store the
deployment counts in) as a one-event batch: the hard-limit check and the increment are the
recorder's single atomic step, so concurrent calls from any number of processes never
overshoot a limit. The answer (allowed or not, with the entitlement decision's reason) is
stored with the id in the batch's transaction; a retry with the id returns the stored answer,
a denied one included, and counts nothing again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog, FeatureType
from tollgate.domain.entitlements import entitlements
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.services.entitlements import customer_state
from tollgate.services.usage.counters import CounterStore, Tallies, Tally
from tollgate.services.usage.events import MAX_ID_LENGTH, UsageReport
from tollgate.services.usage.recording import record_usage
from tollgate_client.decisions import Code, Decision


@dataclass(frozen=True)
class Consumed:
    """A consume answer: the decision, and whether it is the stored answer of an earlier call."""

    id: str
    customer: str
    quantity: int
    decision: Decision
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "customer": self.customer, "quantity": self.quantity} | (
            self.decision.to_json()
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
    _check(catalog, feature, quantity, consumption_id)
    stored = _stored(db, consumption_id, customer_id, feature, quantity)
    if stored is not None:
        return stored
    answers: list[Decision] = []

    def decided(
        connection: Connection, tallies: Tallies, report: UsageReport, now: datetime
    ) -> None:
        tally = tallies[(customer_id, feature)]
        decision = _decision(catalog, tally, report, quantity, now, grace)
        if queries.insert_consumption(
            connection,
            consumption_id=consumption_id,
            customer_id=customer_id,
            feature=feature,
            quantity=quantity,
            allowed=decision.allowed,
            answer=decision.to_json(),
            now=now,
        ):
            answers.append(decision)

    report = record_usage(
        db=db,
        catalog=catalog,
        clock=clock,
        events=[
            {"id": consumption_id, "customer": customer_id, "meter": feature, "value": quantity}
        ],
        grace=grace,
        counters=counters,
        decided=decided,
    )
    if report.rejected and report.rejected[0].code == "unknown_customer":
        raise NotFound(f"no customer {customer_id!r}", param="id")
    if answers:
        return Consumed(consumption_id, customer_id, quantity, answers[0])
    # Another call with this id answered first (or the id is a usage event's): its answer.
    stored = _stored(db, consumption_id, customer_id, feature, quantity)
    if stored is None:
        raise Conflict(
            f"id {consumption_id!r} was recorded as a usage event (POST /v1/usage), not by "
            "consume; use a new id",
            param="id",
        )
    return stored


def _check(catalog: Catalog, feature: str, quantity: int, consumption_id: str) -> None:
    known = catalog.features.get(feature)
    if known is None or known.type is not FeatureType.METERED:
        metered = sorted(f for f, v in catalog.features.items() if v.type is FeatureType.METERED)
        raise InvalidRequest(
            f"unknown metered feature {feature!r}; metered features are: {', '.join(metered)}",
            param="feature",
        )
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise InvalidRequest("quantity must be a whole number, 0 or more", param="quantity")
    if quantity >= 2**53:
        raise InvalidRequest("quantity is too large", param="quantity")
    if not consumption_id or len(consumption_id) > MAX_ID_LENGTH:
        raise InvalidRequest(f"id must be 1 to {MAX_ID_LENGTH} characters", param="id")


def _stored(
    db: Database, consumption_id: str, customer_id: str, feature: str, quantity: int
) -> Consumed | None:
    with db.engine.connect() as connection:
        row = queries.consumption(connection, consumption_id)
        connection.rollback()
    if row is None:
        return None
    if (row.customer_id, row.feature, int(row.quantity)) != (customer_id, feature, quantity):
        raise Conflict(
            f"id {consumption_id!r} was used for {int(row.quantity):,} {row.feature} of "
            f"customer {row.customer_id!r}; a retry must repeat the same call",
            param="id",
        )
    return Consumed(
        consumption_id, customer_id, quantity, Decision.from_json(row.answer), replayed=True
    )


def _decision(
    catalog: Catalog,
    tally: Tally,
    report: UsageReport,
    quantity: int,
    now: datetime,
    grace: timedelta,
) -> Decision:
    """Return the answer of the one event: the entitlement decision against the usage before
    it, with `used` and `remaining` as they are after it."""
    refused = report.rejected[0] if report.rejected else None
    if refused is not None and refused.code == "insufficient_credits":
        return Decision(
            allowed=False,
            feature=tally.meter,
            reason=refused.message,
            code=Code.INSUFFICIENT_CREDITS,
            limit=tally.grant.limit,
            used=tally.counter.value,
            remaining=None,
        )
    state = customer_state(tally.customer, {tally.meter: tally.before}, held=_held(tally))
    before = entitlements(catalog, state, now=now, grace=grace)
    decision = before.decide(tally.meter, quantity)
    if refused is not None:
        if decision.allowed:  # the recorder's word is final: it saw the counter under its lock
            decision = dataclasses.replace(decision, allowed=False, code=Code.LIMIT_EXCEEDED)
        return decision
    after = entitlements(
        catalog,
        customer_state(tally.customer, {tally.meter: tally.counter.value}, held=_held(tally)),
        now=now,
        grace=grace,
    ).features[tally.meter]
    return dataclasses.replace(
        decision,
        allowed=True,
        code=Code.ALLOWED,
        used=after.used,
        remaining=after.remaining,
    )


def _held(tally: Tally) -> dict[str, int]:
    return {tally.meter: tally.held} if tally.held else {}
