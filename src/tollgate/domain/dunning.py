"""Dunning: what a failed payment attempt means for the customer's email and access."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

Access = Literal["full", "reduced", "default"]
ACCESS_LEVELS: tuple[Access, ...] = ("full", "reduced", "default")
# The emails a dunning step may send (each has a template in tollgate/notify/templates).
DUNNING_TEMPLATES = ("payment_failed_soft", "payment_failed_warning", "downgraded_payment_failed")

# Attempt 1: ask for a new card, keep access. Attempt 2: warn, reduce access to the grace
# level. Attempt 3 and later: downgrade to the default plan's access until the payment recovers
# or Stripe ends the subscription (unpaid or canceled, per its own retry settings).
DEFAULT_POLICY = (
    "1:payment_failed_soft:full,"
    "2:payment_failed_warning:reduced,"
    "3:downgraded_payment_failed:default"
)


@dataclass(frozen=True, slots=True)
class DunningStep:
    """What attempt `attempt_count` of an unpaid invoice does: the email, and access after it."""

    attempt_count: int
    template: str
    access: Access


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    """Steps by attempt count; an attempt beyond the last step uses the last step."""

    steps: tuple[DunningStep, ...]
    # While a bank debit is processing (issue 21, TOLLGATE_PROCESSING_ACCESS): `keep` gives a
    # subscription waiting on its first debit its plan at once; `wait` holds it back until paid.
    processing_access: str = "keep"
    # A customer's open or lost dispute (TOLLGATE_DISPUTE_ACCESS): `keep` or `reduce` access.
    dispute_access: str = "keep"

    def step_for(self, attempt_count: int) -> DunningStep | None:
        """Return the step for a failed attempt (None before the first step's attempt)."""
        chosen = None
        for step in self.steps:
            if step.attempt_count <= attempt_count:
                chosen = step
        return chosen


def parse_dunning_policy(text: str) -> DunningPolicy:
    """Parse `attempt:template:access,…`, e.g. "1:payment_failed_soft:full,3:…:default"."""
    steps: dict[int, DunningStep] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        parts = [piece.strip() for piece in entry.split(":")]
        if len(parts) != 3:
            raise ValueError(f"step {entry!r} must be attempt:template:access")
        attempt, template, access = parts
        if not attempt.isdigit() or int(attempt) < 1:
            raise ValueError(f"step {entry!r}: the attempt must be a whole number from 1")
        if template not in DUNNING_TEMPLATES:
            raise ValueError(
                f"step {entry!r}: template must be one of {', '.join(DUNNING_TEMPLATES)}"
            )
        if access not in ACCESS_LEVELS:
            raise ValueError(f"step {entry!r}: access must be one of {', '.join(ACCESS_LEVELS)}")
        if int(attempt) in steps:
            raise ValueError(f"attempt {attempt} has two steps")
        steps[int(attempt)] = DunningStep(int(attempt), template, access)
    if not steps:
        raise ValueError("the policy needs at least one step")
    ordered = tuple(steps[attempt] for attempt in sorted(steps))
    for earlier, later in pairwise(ordered):
        if ACCESS_LEVELS.index(later.access) < ACCESS_LEVELS.index(earlier.access):
            raise ValueError(
                f"attempt {later.attempt_count} gives back access attempt "
                f"{earlier.attempt_count} took; access may only shrink as attempts fail"
            )
    return DunningPolicy(ordered)


def access_after_failure(
    policy: DunningPolicy, attempt_count: int, current: Access | None
) -> Access | None:
    """Return the access after a failed attempt: the policy's, never more than `current` gives."""
    step = policy.step_for(attempt_count)
    if step is None:
        return current
    if current is None:
        return step.access
    # Events come in any order: a late attempt-1 failure must not undo attempt 3's downgrade.
    return max(current, step.access, key=ACCESS_LEVELS.index)
