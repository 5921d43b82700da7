"""One clock in dev: the simulated Stripe's test clock and Tollgate's clock move together.

`tollgate dev` makes a test clock, attaches every new customer to it (STRIPE_TEST_CLOCK) and
gives Tollgate an AdjustableClock. Moving forward advances the test clock (Stripe renews, ends
trials, retries payments and sends its webhooks on the way) and then Tollgate's clock, so usage,
reminders and plan changes are judged at the same simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tollgate.clock import AdjustableClock
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.time_travel import moved_time, steps_to
from tollgate.stripe.gateway import StripeGateway


@dataclass(frozen=True)
class DevTime:
    """Where the two clocks stand."""

    stripe: datetime
    tollgate: datetime

    def to_json(self) -> dict[str, str]:
        return {"stripe_time": self.stripe.isoformat(), "tollgate_time": self.tollgate.isoformat()}


def dev_time(*, gateway: StripeGateway, clock: AdjustableClock, test_clock: str) -> DevTime:
    """Return the simulated Stripe's time and Tollgate's."""
    return DevTime(gateway.test_clock_time(test_clock), clock.now())


def advance_dev_clock(
    *, gateway: StripeGateway, clock: AdjustableClock, test_clock: str, by: str
) -> DevTime:
    """Move the test clock forward by `by` (`3d`, `1mo`, an ISO time), then Tollgate's clock."""
    start = gateway.test_clock_time(test_clock)
    try:
        target = moved_time(start, by)
    except ValueError as error:
        raise InvalidRequest(str(error), param="by") from None
    for step in steps_to(start, target):
        gateway.advance_test_clock(test_clock, to=step)
    clock.move_to(target)
    return DevTime(target, clock.now())
