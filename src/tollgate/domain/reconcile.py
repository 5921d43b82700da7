"""Compare the mirror with Stripe: which fields count, what kind of drift a difference is.

Stripe is the system of record for money and subscription state, so a drift in those is healed
by applying Stripe's current object. A local object Stripe does not have is only reported:
Tollgate cannot know whether Stripe lost it or Tollgate made it up, and deleting records of money
is not a decision to take automatically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any


class DriftKind(StrEnum):
    """How the mirror and Stripe disagree about one object."""

    MISSING_LOCALLY = "missing_locally"
    STATUS_DIFFERS = "status_differs"
    AMOUNT_DIFFERS = "amount_differs"
    UNKNOWN_TO_STRIPE = "unknown_to_stripe"
    USAGE_DIFFERS = "usage_differs"
    LEDGER_UNBALANCED = "ledger_unbalanced"
    # A customer's cash balance (bank transfers not yet applied) differs from Stripe's.
    CASH_BALANCE_DIFFERS = "cash_balance_differs"
    # A connected account Stripe would not let the platform read (access revoked, account
    # deleted): reported and skipped, so one tenant cannot stop the run for the others.
    ACCOUNT_REFUSED = "account_refused"


# What Stripe is the record for: applying its object fixes these.
HEALABLE = frozenset(
    {DriftKind.MISSING_LOCALLY, DriftKind.STATUS_DIFFERS, DriftKind.AMOUNT_DIFFERS}
)

# Applying a charge also applies its refunds, and applying a dispute fetches its charge when
# missing: refunds come before charges and charges before disputes, so each drift is seen and
# reported before healing another object mends it in passing.
OBJECT_TYPES = ("subscription", "invoice", "refund", "charge", "dispute")

# The id prefixes Stripe gives each compared object (a dispute's is `dp_`, or `du_` on older
# accounts), so an id alone names its object.
_PREFIXES = {"sub_": "subscription", "in_": "invoice", "re_": "refund", "ch_": "charge"}
_PREFIXES |= {"py_": "charge", "dp_": "dispute", "du_": "dispute"}


def values_text(values: Mapping[str, Any]) -> str:
    """Return one side of a drift as `key=value, …`, as the CLI and the console show it."""
    return ", ".join(f"{key}={value}" for key, value in values.items())


_STRIPE_ID = re.compile(r"[a-z]+_[A-Za-z0-9_]{1,250}")


def object_type_of(object_id: str) -> str | None:
    """Return which compared object a Stripe id names, or None when it names none of them
    (or is not a Stripe id at all)."""
    if not _STRIPE_ID.fullmatch(object_id):
        return None
    return _PREFIXES.get(object_id[: object_id.index("_") + 1])


def is_account_id(account: str) -> bool:
    """Whether `account` has the shape of a connected account's id (`acct_…`)."""
    return _STRIPE_ID.fullmatch(account) is not None and account.startswith("acct_")


@dataclass(frozen=True, slots=True)
class Compared:
    """The fields compared for one object type: its state, then its money."""

    state: tuple[str, ...]
    money: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.state + self.money


# Field names are the mirror's column names and the snapshots' attribute names alike. Only
# fields a webhook handler copies straight from Stripe's object are compared, so applying that
# object always makes them equal (a derived field such as a charge's invoice link is not).
COMPARED: dict[str, Compared] = {
    "subscription": Compared(
        state=(
            "status",
            "cancel_at_period_end",
            "plan",
            "interval",
            "seats",
            "trial_end",
            "current_period_end",
        ),
        money=("currency",),
    ),
    "invoice": Compared(
        # attempt_count: a second failed attempt whose events were lost changes nothing else,
        # yet dunning (access, the warning email) follows it.
        state=("status", "attempt_count"),
        money=("currency", "amount_due", "amount_paid", "amount_remaining", "total"),
    ),
    "charge": Compared(
        state=("status", "refunded"), money=("currency", "amount", "amount_refunded")
    ),
    "refund": Compared(state=("status",), money=("currency", "amount")),
    "dispute": Compared(state=("status",), money=("currency", "amount")),
}


@dataclass(frozen=True, slots=True)
class Drift:
    """One disagreement: the values each side holds (only the fields that differ)."""

    kind: DriftKind
    object_type: str
    object_id: str
    local: Mapping[str, Any] | None
    stripe: Mapping[str, Any] | None

    @property
    def healable(self) -> bool:
        return self.kind in HEALABLE


def compare_object(
    object_type: str,
    object_id: str,
    *,
    local: Mapping[str, Any] | None,
    stripe: Mapping[str, Any] | None,
) -> Drift | None:
    """Return how the mirror's copy differs from Stripe's, or None when they agree.

    A difference in state wins over one in money: a voided invoice also owes nothing.
    """
    compared = COMPARED[object_type]
    if local is None and stripe is None:
        return None
    if local is None:
        assert stripe is not None
        shown = {name: stripe[name] for name in compared.fields}
        return Drift(DriftKind.MISSING_LOCALLY, object_type, object_id, None, shown)
    if stripe is None:
        shown = {name: local[name] for name in compared.fields}
        return Drift(DriftKind.UNKNOWN_TO_STRIPE, object_type, object_id, shown, None)
    differing = [name for name in compared.fields if local[name] != stripe[name]]
    if not differing:
        return None
    kind = (
        DriftKind.STATUS_DIFFERS
        if any(name in compared.state for name in differing)
        else DriftKind.AMOUNT_DIFFERS
    )
    return Drift(
        kind,
        object_type,
        object_id,
        {name: local[name] for name in differing},
        {name: stripe[name] for name in differing},
    )


# Stripe aggregates meter events asynchronously: what was sent this recently may not be in its
# summaries yet, so such a period is left for the next run.
METER_SETTLE = timedelta(minutes=15)


def meter_event_moment(
    occurred_at: datetime, period_start: datetime, period_end: datetime
) -> datetime:
    """Return the timestamp a meter event carries: its time, kept inside its billing period.

    Stripe bills an event in the period holding its timestamp: tollgate.services.meter_usage
    sends each group with this moment, and reconciliation finds the group's period by it.
    """
    return min(max(occurred_at, period_start), period_end - timedelta(seconds=1))


def minute_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Return [start, end) widened to whole minutes: Stripe's meter summaries start and end so."""
    low = start.replace(second=0, microsecond=0)
    high = end.replace(second=0, microsecond=0)
    if high < end:
        high += timedelta(minutes=1)
    return low, high


def compare_usage(
    object_id: str,
    *,
    feature: str,
    window: tuple[datetime, datetime],
    sent: int,
    meter_id: str | None,
    aggregated: Decimal,
) -> Drift | None:
    """Return how the overage Tollgate sent in a window differs from what Stripe's meter holds.

    Only Tollgate's side is the record here (it counted the usage); nothing is healed.
    """
    if meter_id is not None and aggregated == sent:
        return None
    start, end = (at.isoformat() for at in window)
    return Drift(
        DriftKind.USAGE_DIFFERS,
        "meter_usage",
        object_id,
        {"feature": feature, "start": start, "end": end, "overage_sent": sent},
        {"meter": meter_id, "aggregated_value": _plain_number(aggregated)},
    )


def compare_cash_balance(
    customer_id: str, *, local: Mapping[str, int] | None, stripe: Mapping[str, int]
) -> Drift | None:
    """Return how the mirrored cash balance differs from Stripe's (by currency, zeros left out).

    Reported, not healed here: the next transfer's webhook fetches Stripe's figure again.
    """
    mine = {currency: amount for currency, amount in (local or {}).items() if amount}
    theirs = {currency: amount for currency, amount in stripe.items() if amount}
    if mine == theirs:
        return None
    return Drift(
        DriftKind.CASH_BALANCE_DIFFERS,
        "cash_balance",
        customer_id,
        {"available": dict(sorted(mine.items()))},
        {"available": dict(sorted(theirs.items()))},
    )


def _plain_number(value: Decimal) -> int | str:
    return int(value) if value == value.to_integral_value() else str(value)


def ledger_drift(problem: str) -> Drift:
    """Return a problem the credit ledger's own check found, as a drift (never healed).

    The object is the customer the problem names (`customer '<id>'`), else the ledger.
    """
    named = _LEDGER_CUSTOMER.search(problem)
    owner = named.group(1) if named else "ledger"
    return Drift(DriftKind.LEDGER_UNBALANCED, "credit_ledger", owner, {"problem": problem}, None)


_LEDGER_CUSTOMER = re.compile(r"customer '([^']+)'")


def heal_event_type(object_type: str, stripe: Mapping[str, Any]) -> str:
    """Return the event type Stripe sends for an object in this state, to apply it as one."""
    status = stripe.get("status")
    if object_type == "subscription":
        if status == "canceled":
            return "customer.subscription.deleted"
        return "customer.subscription.updated"
    if object_type == "invoice":
        if status == "open" and (stripe.get("attempt_count") or 0) > 0:
            return "invoice.payment_failed"  # open after an attempt: the attempt failed
        return {
            "draft": "invoice.created",
            "paid": "invoice.paid",
            "void": "invoice.voided",
            "uncollectible": "invoice.marked_uncollectible",
        }.get(str(status), "invoice.finalized")
    if object_type == "charge":
        if stripe.get("amount_refunded"):
            return "charge.refunded"
        return "charge.failed" if status == "failed" else "charge.succeeded"
    if object_type == "refund":
        return "refund.updated"
    if object_type == "dispute":
        closed = status in ("won", "lost", "warning_closed")
        return "charge.dispute.closed" if closed else "charge.dispute.updated"
    raise ValueError(f"no event applies a {object_type}")


def heal_event_created(
    now: datetime, stored_watermark: int | None, object_time: int | None = None
) -> int:
    """Return the `created` second of a healing event: after whatever the mirror holds, and no
    earlier than Stripe's own clock says the object last changed.

    Stripe's object was read after the stored event was made, so it is newer even when
    Stripe's clock runs ahead of this one. It is also at least as new as any event Stripe made
    for the changes it shows: with a test clock, Stripe's time runs ahead of Tollgate's, and a
    heal stamped with Tollgate's clock would let Stripe's retried event for the same change look
    newer and apply (and notify) a second time.
    """
    return max(int(now.timestamp()), (stored_watermark or 0) + 1, object_time or 0)


# Moments a Stripe object records when it changed (never ones it schedules, like trial_end).
_CHANGE_TIMES = ("created", "canceled_at", "ended_at", "start_date", "current_period_start")


def stripe_object_time(obj: Mapping[str, Any]) -> int | None:
    """Return the latest moment, by Stripe's clock, at which the object says it changed."""
    moments = [obj.get(name) for name in _CHANGE_TIMES]
    transitions = obj.get("status_transitions")
    if isinstance(transitions, Mapping):
        moments.extend(transitions.values())
    items = obj.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("data"), list):
        moments.extend(
            item.get("current_period_start") for item in items["data"] if isinstance(item, Mapping)
        )
    known = [m for m in moments if isinstance(m, int) and not isinstance(m, bool)]
    return max(known) if known else None


_WINDOW = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str, now: datetime) -> datetime:
    """Return the start of a window given as `24h`, `90m`, `7d` or an ISO 8601 time."""
    match = _WINDOW.match(text)
    if match:
        amount = int(match.group(1))
        if amount <= 0:
            raise ValueError(f"{text!r}: the window must be longer than 0")
        return now - timedelta(**{_UNITS[match.group(2)]: amount})
    try:
        since = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a window (24h, 90m, 7d) or an ISO 8601 time") from None
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    if since >= now:
        raise ValueError(f"{text!r} is not in the past")
    return since.astimezone(UTC)


# Nightly windows overlap by this much, so an object made while one run starts is not missed.
NIGHTLY_OVERLAP = timedelta(hours=1)
NIGHTLY_WINDOW = timedelta(hours=24)


def nightly_slot(now: datetime, at: time) -> datetime | None:
    """Return today's scheduled run time if it has passed, else None (not due yet today)."""
    slot = datetime.combine(now.astimezone(UTC).date(), at.replace(tzinfo=None), UTC)
    return slot if now >= slot else None


def nightly_since(now: datetime, last_succeeded_until: datetime | None) -> datetime:
    """Return where a nightly window starts: the last good run's end, or a day back, overlapped.

    After failed nights the window reaches back to the last run that finished, so nothing in
    between goes unchecked.
    """
    since = now - NIGHTLY_WINDOW
    if last_succeeded_until is not None:
        since = min(since, last_succeeded_until)
    return since - NIGHTLY_OVERLAP
