"""Reservations: units held against a limit for long work, then committed or released.

A reservation goes through the one recorder (`record_usage`) as events that change the units
its counter holds (`Event.hold`): creating one holds `quantity` if used plus held plus it fits
the hard limit, in the same atomic step as any usage (database row locks, or Redis's script),
so holds count in every decision on every process. Committing records what was used and gives
the hold back in one event (more than held is allowed where it fits: a soft limit always);
releasing, or the expiry job, gives the hold back. The reservation row changes state in the
same transaction; a step that finds it closed by another (a release racing the expiry job)
rolls back whole, so a hold is never given back twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.db.queries import usage_controls as queries
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation, Catalog, FeatureType
from tollgate.domain.entitlements import entitlements
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.services.entitlements import customer_state
from tollgate.services.usage.counters import CounterStore, Tallies, Tally
from tollgate.services.usage.events import MAX_ID_LENGTH, UsageReport
from tollgate.services.usage.recording import record_usage
from tollgate_client.decisions import Code, Decision

MAX_TTL = timedelta(days=7)


@dataclass(frozen=True)
class ReservationView:
    """A reservation and, for the call that answered it, the decision."""

    id: str
    customer: str
    feature: str
    quantity: int
    status: str  # held | committed | released | expired | denied
    committed: int | None
    expires_at: datetime
    created_at: datetime
    decision: Decision | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "customer": self.customer,
            "feature": self.feature,
            "quantity": self.quantity,
            "status": self.status,
            "committed": self.committed,
            "expires_at": self.expires_at.isoformat(),
            "created_at": self.created_at.isoformat(),
        }
        if self.decision is not None:
            body |= {
                "allowed": self.decision.allowed,
                "reason": self.decision.reason,
                "code": self.decision.code.value,
                "limit": self.decision.limit,
                "used": self.decision.used,
                "remaining": self.decision.remaining,
            }
        return body


class _Closed(Exception):
    """The reservation was closed by another call meanwhile: the step is rolled back."""


@dataclass(frozen=True)
class Usage:
    """What a reservation step needs to record: the container's wiring."""

    db: Database
    catalog: Catalog
    clock: Clock
    grace: timedelta = timedelta(days=7)
    counters: CounterStore | None = None

    def record(self, event: dict[str, Any], hold: int, decided: Any) -> UsageReport:
        return record_usage(
            db=self.db,
            catalog=self.catalog,
            clock=self.clock,
            events=[event],
            grace=self.grace,
            counters=self.counters,
            decided=decided,
            holds={event["id"]: hold},
        )


def create_reservation(
    usage: Usage,
    *,
    customer_id: str,
    feature: str,
    quantity: int,
    ttl_seconds: int,
    reservation_id: str,
) -> ReservationView:
    """Hold `quantity` of a feature for `ttl_seconds` if it fits; once per id."""
    _check(usage.catalog, feature, quantity, ttl_seconds, reservation_id)
    found = _read(usage.db, reservation_id)
    if found is not None:
        if (found.customer, found.feature, found.quantity) != (customer_id, feature, quantity):
            raise Conflict(
                f"reservation {reservation_id!r} holds {found.quantity:,} {found.feature} of "
                f"customer {found.customer!r}; a retry must repeat the same call",
                param="id",
            )
        return found
    answers: list[ReservationView] = []

    def decided(
        connection: Connection, tallies: Tallies, report: UsageReport, now: datetime
    ) -> None:
        tally = tallies[(customer_id, feature)]
        allowed = report.accepted == 1
        row = {
            "id": reservation_id,
            "customer_id": customer_id,
            "feature": feature,
            "period_start": tally.period.start,
            "period_end": tally.period.end,
            "quantity": quantity,
            "status": "held" if allowed else "denied",
            "committed": None,
            "expires_at": now + timedelta(seconds=ttl_seconds),
            "created_at": now,
            "closed_at": None if allowed else now,
        }
        if queries.insert_reservation(connection, row):
            decision = _decision(usage, tally, report, quantity, now, "held")
            answers.append(_view(row, decision))

    report = usage.record(_event(reservation_id, "", customer_id, feature, 0), quantity, decided)
    _known_customer(report, customer_id)
    if answers:
        return answers[0]
    found = _read(usage.db, reservation_id)
    if found is None:
        raise Conflict(f"id {reservation_id!r} is taken; use a new id", param="id")
    return found


def commit_reservation(
    usage: Usage, *, customer_id: str, reservation_id: str, quantity: int
) -> ReservationView:
    """Record `quantity` used under the reservation and give back its hold."""
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise InvalidRequest("quantity must be a whole number, 0 or more", param="quantity")
    return _close(usage, customer_id, reservation_id, "committed", quantity)


def release_reservation(
    usage: Usage, *, customer_id: str, reservation_id: str, status: str = "released"
) -> ReservationView:
    """Give back the reservation's hold, recording nothing."""
    return _close(usage, customer_id, reservation_id, status, None)


def release_expired_reservations(usage: Usage, *, limit: int = 500) -> int:
    """Release every held reservation whose time ran out; return how many this run released."""
    now = usage.clock.now()
    with usage.db.engine.connect() as connection:
        expired = queries.expired_reservations(connection, now, limit)
        connection.rollback()
    released = 0
    for reservation_id in expired:
        found = _read(usage.db, reservation_id)
        if found is None or found.status != "held":
            continue
        view = release_reservation(
            usage, customer_id=found.customer, reservation_id=reservation_id, status="expired"
        )
        released += view.status == "expired"
    return released


def get_reservation(db: Database, *, customer_id: str, reservation_id: str) -> ReservationView:
    found = _read(db, reservation_id)
    if found is None or found.customer != customer_id:
        raise NotFound(f"no reservation {reservation_id!r} of {customer_id!r}", param="id")
    return found


# -- the steps -------------------------------------------------------------------------------


def _close(
    usage: Usage, customer_id: str, reservation_id: str, status: str, committed: int | None
) -> ReservationView:
    found = get_reservation(usage.db, customer_id=customer_id, reservation_id=reservation_id)
    if found.status != "held":
        return _settled(found, status, committed)
    now = usage.clock.now()
    row = _row_of(usage.db, reservation_id)
    # A hold lives on its period's counter: after the period turned, there is none to give back.
    hold = -found.quantity if row.period_end > now else 0
    answers: list[ReservationView] = []

    def decided(
        connection: Connection, tallies: Tallies, report: UsageReport, at: datetime
    ) -> None:
        tally = tallies[(customer_id, found.feature)]
        if report.accepted != 1:  # committing more than held, past a hard limit
            refused = _decision(usage, tally, report, committed or 0, at, "recorded")
            answers.append(dataclasses.replace(found, decision=refused))
            return
        if not queries.close_reservation(
            connection, reservation_id, status=status, committed=committed, now=at
        ):
            raise _Closed(reservation_id)
        decision: Decision | None = None
        if committed is not None:
            decision = _decision(usage, tally, report, committed, at, "recorded")
        answers.append(
            dataclasses.replace(found, status=status, committed=committed, decision=decision)
        )

    suffix = ":commit" if status == "committed" else ":release"
    event = _event(reservation_id, suffix, customer_id, found.feature, committed or 0)
    with contextlib.suppress(_Closed):  # rolled back whole: the reservation is read again
        usage.record(event, hold, decided)
    if answers:
        return answers[0]
    again = get_reservation(usage.db, customer_id=customer_id, reservation_id=reservation_id)
    return _settled(again, status, committed)


def _settled(found: ReservationView, status: str, committed: int | None) -> ReservationView:
    """Answer a step on a closed reservation: the same step again is its answer; others 409."""
    repeat = found.status == status and found.committed == committed
    if repeat or (status == "released" and found.status == "expired"):
        return found
    raise Conflict(
        f"reservation {found.id!r} is {found.status}; it can no longer be "
        f"{'committed' if status == 'committed' else 'released'}",
        param="id",
    )


def _event(
    reservation_id: str, suffix: str, customer_id: str, feature: str, value: int
) -> dict[str, Any]:
    # The events' ids keep each step exactly once: a retried step finds its event recorded.
    return {
        "id": f"reservation:{reservation_id}{suffix}",
        "customer": customer_id,
        "meter": feature,
        "value": value,
    }


def _known_customer(report: UsageReport, customer_id: str) -> None:
    if report.rejected and report.rejected[0].code == "unknown_customer":
        raise NotFound(f"no customer {customer_id!r}", param="customer")


def _check(
    catalog: Catalog, feature: str, quantity: int, ttl_seconds: int, reservation_id: str
) -> None:
    known = catalog.features.get(feature)
    if (
        known is None
        or known.type is not FeatureType.METERED
        or known.aggregation is not Aggregation.SUM
    ):
        summed = sorted(
            f
            for f, v in catalog.features.items()
            if v.type is FeatureType.METERED and v.aggregation is Aggregation.SUM
        )
        raise InvalidRequest(
            f"{feature!r} cannot be reserved; reservations hold units of a summed metered "
            f"feature: {', '.join(summed)}",
            param="feature",
        )
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InvalidRequest("quantity must be a whole number, 1 or more", param="quantity")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise InvalidRequest("ttl_seconds must be a whole number of seconds", param="ttl_seconds")
    if not 1 <= ttl_seconds <= MAX_TTL.total_seconds():
        raise InvalidRequest(
            f"ttl_seconds must be 1 to {int(MAX_TTL.total_seconds()):,} (7 days)",
            param="ttl_seconds",
        )
    if not reservation_id or len(reservation_id) > MAX_ID_LENGTH - len("reservation::release"):
        raise InvalidRequest("id must be 1 to 230 characters", param="id")


def _decision(
    usage: Usage, tally: Tally, report: UsageReport, quantity: int, now: datetime, done: str
) -> Decision:
    """Return the decision of a reservation step, with used and held as the step left them."""
    refused = report.rejected[0] if report.rejected else None
    held = {tally.meter: tally.held} if tally.held else {}
    state = customer_state(tally.customer, {tally.meter: tally.counter.value}, held=held)
    granted = entitlements(usage.catalog, state, now=now, grace=usage.grace)
    feature = granted.features[tally.meter]
    if refused is None:
        return Decision(
            allowed=True,
            feature=tally.meter,
            reason=f"{quantity:,} {_unit(usage.catalog, tally.meter)} {done}; "
            f"{feature.held:,} held in all.",
            code=Code.ALLOWED,
            limit=feature.limit,
            used=feature.used,
            remaining=feature.remaining,
        )
    if refused.code == "insufficient_credits":
        return Decision(
            False,
            tally.meter,
            refused.message,
            Code.INSUFFICIENT_CREDITS,
            feature.limit,
            feature.used,
            feature.remaining,
        )
    decision = granted.decide(tally.meter, quantity)
    return dataclasses.replace(decision, allowed=False, code=Code.LIMIT_EXCEEDED)


def _unit(catalog: Catalog, feature_id: str) -> str:
    feature = catalog.features[feature_id]
    return feature.unit or feature.name.lower()


def _view(row: dict[str, Any], decision: Decision | None = None) -> ReservationView:
    return ReservationView(
        id=row["id"],
        customer=row["customer_id"],
        feature=row["feature"],
        quantity=int(row["quantity"]),
        status=row["status"],
        committed=row["committed"],
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        decision=decision,
    )


def _row_of(db: Database, reservation_id: str) -> Any:
    with db.engine.connect() as connection:
        row = queries.reservation(connection, reservation_id)
        connection.rollback()
    return row


def _read(db: Database, reservation_id: str) -> ReservationView | None:
    row = _row_of(db, reservation_id)
    return None if row is None else _view(row._asdict())
