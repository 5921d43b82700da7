"""Credits as a double-entry ledger: the pure rules for grants, burns, expiry, clawback, overdraft.

Every customer has a wallet account (`customer`) and its own system accounts (`grants`,
`purchases`, `usage`, `expired`, `overdraft`); each change moves credits between two of them, so
the entries of every transaction sum to zero and so do all of a customer's accounts. Credits that
came in are held in lots (one per grant or purchase) that burn expiring-soonest first. The wallet
may go below zero, down to the overdraft allowance; credits that come in then repay the debt
first, so the lots' remaining credits always add up to the positive part of the wallet balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tollgate.domain.metering import add_months

WALLET = "customer"
GRANTS = "grants"
PURCHASES = "purchases"
USAGE = "usage"
EXPIRED = "expired"
OVERDRAFT = "overdraft"
ACCOUNTS = (WALLET, GRANTS, PURCHASES, USAGE, EXPIRED, OVERDRAFT)

# What a transaction is; the API lists it with each entry.
GRANT = "grant"
PURCHASE = "purchase"
BURN = "burn"
EXPIRY = "expiry"
CLAWBACK = "clawback"
OVERDRAFT_INVOICE = "overdraft_invoice"

MAX_CREDITS = 10**12
MIN_INVOICE_DAY = 1
MAX_INVOICE_DAY = 28


@dataclass(frozen=True)
class CreditPosition:
    """A customer's wallet balance and how far below zero it may go."""

    balance: int
    allowance: int

    @property
    def available(self) -> int:
        """Return the credits that may still be spent, overdraft included."""
        return self.balance + self.allowance

    def allows(self, credits: int) -> bool:
        """Return whether spending `credits` keeps the balance at or above -allowance."""
        return credits <= self.available


@dataclass(frozen=True)
class Lot:
    """Credits that came in together (a grant or a purchase), and what is left of them."""

    id: int
    remaining: int
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        """Return whether the lot's credits have run out of time."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Posting:
    """One side of a transaction: credits into (positive) or out of (negative) an account."""

    account: str
    amount: int
    lot_id: int | None = None


@dataclass(frozen=True)
class Movement:
    """What one transaction writes: balanced postings, lots' new remainders, a new lot's size."""

    postings: tuple[Posting, ...]
    lots: tuple[tuple[int, int], ...] = ()  # (lot id, remaining after)
    new_lot: int = 0  # credits the new lot holds (what is left after repaying debt)

    def __post_init__(self) -> None:
        if sum(posting.amount for posting in self.postings) != 0:
            raise ValueError(f"unbalanced postings: {self.postings}")

    @property
    def wallet_change(self) -> int:
        """Return how much the wallet balance moves."""
        return sum(p.amount for p in self.postings if p.account == WALLET)


def burn_order(lots: Iterable[Lot], now: datetime) -> list[Lot]:
    """Return the lots that can be spent, expiring soonest first, lots that never expire last."""
    far = datetime.max.replace(tzinfo=UTC)
    spendable = [lot for lot in lots if lot.remaining > 0 and not lot.expired(now)]
    return sorted(spendable, key=lambda lot: (lot.expires_at or far, lot.id))


def spendable_balance(balance: int, lots: Iterable[Lot], now: datetime) -> int:
    """Return the balance without the credits of lots that expired and are not yet written off."""
    return balance - sum(lot.remaining for lot in lots if lot.remaining > 0 and lot.expired(now))


def credit_in(balance: int, credits: int, source: str) -> Movement:
    """Return a grant or purchase: the source account pays the wallet; debt is repaid first."""
    _check_positive(credits)
    debt = max(0, -balance)
    return Movement(
        (Posting(source, -credits), Posting(WALLET, credits)),
        new_lot=credits - min(credits, debt),
    )


def debit(
    lots: Sequence[Lot],
    credits: int,
    destination: str,
    now: datetime,
    *,
    first: int | None = None,
) -> Movement:
    """Return the wallet paying `credits` to `destination`, from its lots in burn order.

    `first` names a lot spent before the others (a refunded purchase's own lot). What the lots
    do not cover takes the wallet below zero (a posting without a lot).
    """
    _check_positive(credits)
    ordered = burn_order(lots, now)
    ordered.sort(key=lambda lot: lot.id != first)  # stable: the rest stay in burn order
    left = credits
    postings: list[Posting] = []
    changed: list[tuple[int, int]] = []
    for lot in ordered:
        if left == 0:
            break
        take = min(left, lot.remaining)
        postings.append(Posting(WALLET, -take, lot.id))
        changed.append((lot.id, lot.remaining - take))
        left -= take
    if left:
        postings.append(Posting(WALLET, -left))
    postings.append(Posting(destination, credits))
    return Movement(tuple(postings), tuple(changed))


def burn(
    position: CreditPosition, lots: Sequence[Lot], credits: int, now: datetime
) -> Movement | None:
    """Return usage burning `credits`, or None when it would go below -allowance."""
    spendable = spendable_balance(position.balance, lots, now)
    # Checked first even for nothing: a wallet already past its allowance (a refund clawed back
    # credits that were spent) spends nothing more, as the entitlement decision says too.
    if not CreditPosition(spendable, position.allowance).allows(credits):
        return None
    if credits == 0:
        return Movement(())
    return debit(lots, credits, USAGE, now)


def expire(lot: Lot) -> Movement:
    """Return the write-off of a lot's remaining credits to the `expired` account."""
    _check_positive(lot.remaining)
    return Movement(
        (Posting(WALLET, -lot.remaining, lot.id), Posting(EXPIRED, lot.remaining)),
        ((lot.id, 0),),
    )


def clawback_credits(
    *, credits: int, charge_amount: int, refunded_before: int, refunded_now: int
) -> int:
    """Return the credits a refund takes back: in proportion to the amount refunded.

    Rounded so that refunds adding up to the whole charge take back exactly all the credits.
    """
    if charge_amount <= 0 or refunded_now <= 0:
        return 0
    before = min(refunded_before, charge_amount)
    after = min(refunded_before + refunded_now, charge_amount)
    return credits * after // charge_amount - credits * before // charge_amount


@dataclass(frozen=True)
class OverdraftRange:
    """The calendar months whose overdraft one invoice settles: `[start, end)`."""

    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """Return the range's name in idempotency keys: YYYY-MM of its start."""
        return f"{self.start.year:04d}-{self.start.month:02d}"


def overdraft_range(now: datetime, *, invoice_day: int, shift: int) -> OverdraftRange | None:
    """Return the month to invoice now, or None before this month's invoice day.

    The range is the month `shift` months from the current one (-1: the previous month).
    """
    if not MIN_INVOICE_DAY <= invoice_day <= MAX_INVOICE_DAY:
        raise ValueError(f"invoice day must be {MIN_INVOICE_DAY} to {MAX_INVOICE_DAY}")
    now = now.astimezone(UTC)
    if now.day < invoice_day:
        return None
    start = add_months(datetime(now.year, now.month, 1, tzinfo=UTC), shift)
    end = add_months(start, 1)
    return OverdraftRange(start, end)


def overdraft_to_invoice(*, balance_at_end: int, balance_now: int) -> int:
    """Return the overdraft to invoice: the debt at the range's end still owed now."""
    return max(0, min(-balance_at_end, -balance_now))


def ledger_differences(
    balances: dict[tuple[str, str], int], sums: dict[tuple[str, str], int]
) -> list[str]:
    """Return each account whose stored balance is not the sum of its entries, and imbalances."""
    problems = []
    for key in sorted(set(balances) | set(sums)):
        stored, summed = balances.get(key, 0), sums.get(key, 0)
        if stored != summed:
            problems.append(
                f"credits account {key[1]} of customer {key[0]!r}: balance {stored} "
                f"but its entries sum to {summed}"
            )
    per_customer: dict[str, int] = {}
    for (customer_id, _account), amount in sums.items():
        per_customer[customer_id] = per_customer.get(customer_id, 0) + amount
    for customer_id, total in sorted(per_customer.items()):
        if total != 0:
            problems.append(f"credits of customer {customer_id!r}: accounts sum to {total}, not 0")
    return problems


def _check_positive(credits: int) -> None:
    if isinstance(credits, bool) or not isinstance(credits, int) or credits <= 0:
        raise ValueError(f"credits must be a positive whole number, not {credits!r}")
    if credits > MAX_CREDITS:
        raise ValueError(f"credits must be at most {MAX_CREDITS}")
