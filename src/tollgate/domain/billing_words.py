"""How the billing page says a subscription's state in words (pure; time is passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class StatusWords:
    """A status as a badge (`label`, `tone`: ok, warn, bad or none) and a sentence."""

    label: str
    tone: str
    sentence: str


def _day(moment: datetime | None) -> str:
    return moment.strftime("%B %-d, %Y") if moment else "the end of the period"


def status_words(
    *,
    status: str,
    plan_name: str,
    trial_end: datetime | None,
    period_end: datetime | None,
    period_start: datetime | None,
    grace: timedelta,
    now: datetime,
) -> StatusWords:
    """Return the words for a subscription's Tollgate status (Stripe's plus canceling, none)."""
    if status == "trialing":
        left = (trial_end - now).days if trial_end else None
        days = f" ({left} day{'s' if left != 1 else ''} left)" if left is not None else ""
        return StatusWords(
            "Trial", "ok", f"Your {plan_name} trial ends on {_day(trial_end)}{days}."
        )
    if status == "active":
        return StatusWords("Active", "ok", f"{plan_name} renews on {_day(period_end)}.")
    if status == "canceling":
        return StatusWords(
            "Canceling",
            "warn",
            f"{plan_name} is canceled and ends on {_day(period_end)}; "
            "you keep it until then and can resume it.",
        )
    if status == "past_due":
        grace_end = period_start + grace if period_start else None
        return StatusWords(
            "Past due",
            "bad",
            f"The last payment failed. Update your payment method before {_day(grace_end)} "
            f"to keep {plan_name}.",
        )
    if status == "unpaid":
        return StatusWords(
            "Unpaid", "bad", "Payments failed; update your payment method to restore your plan."
        )
    if status == "incomplete":
        return StatusWords(
            "Incomplete", "warn", "The first payment needs your attention to start the plan."
        )
    if status == "paused":
        return StatusWords("Paused", "warn", f"{plan_name} is paused.")
    if status in ("canceled", "incomplete_expired"):
        return StatusWords("Ended", "none", f"You are on {plan_name}.")
    return StatusWords("Free" if status == "none" else status, "none", f"You are on {plan_name}.")


def usage_state(used: int, included: int | None, hard: bool) -> str:
    """Return a usage bar's state: ok, warn (80 % or more), full (100 % or more) or blocked."""
    if not included:
        return "ok"
    if used >= included:
        return "blocked" if hard else "full"
    return "warn" if used * 100 >= included * 80 else "ok"
