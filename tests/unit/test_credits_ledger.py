"""The credits ledger's rules: any sequence of grants, burns, expiries and refunds keeps the books.

Movements are applied to an in-memory ledger as the service writes them (entries, lots' new
remainders, a new lot), and after every step: each account's balance is the sum of its entries,
all accounts sum to zero, lots never go negative and hold exactly the positive part of the
wallet, and a burn never takes the wallet below -allowance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.domain.credits import (
    ACCOUNTS,
    EXPIRED,
    GRANTS,
    OVERDRAFT,
    PURCHASES,
    USAGE,
    WALLET,
    CreditPosition,
    Lot,
    Movement,
    burn,
    burn_order,
    clawback_credits,
    credit_in,
    debit,
    expire,
    ledger_differences,
    overdraft_range,
    overdraft_to_invoice,
)

T0 = datetime(2026, 11, 20, 12, tzinfo=UTC)


@dataclass
class Books:
    allowance: int
    now: datetime = T0
    balances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))
    entries: list[tuple[str, int]] = field(default_factory=list)
    lots: dict[int, Lot] = field(default_factory=dict)
    next_lot: int = 1

    def apply(
        self, movement: Movement, expires_at: datetime | None = None, new: bool = False
    ) -> int:
        for posting in movement.postings:
            self.balances[posting.account] += posting.amount
            self.entries.append((posting.account, posting.amount))
        for lot_id, remaining in movement.lots:
            self.lots[lot_id] = Lot(lot_id, remaining, self.lots[lot_id].expires_at)
        lot_id = 0
        if new:
            lot_id = self.next_lot
            self.next_lot += 1
            self.lots[lot_id] = Lot(lot_id, movement.new_lot, expires_at)
        return lot_id

    def expire_due(self) -> None:
        for lot in list(self.lots.values()):
            if lot.remaining > 0 and lot.expired(self.now):
                self.apply(expire(lot))

    def check(self) -> None:
        sums: dict[tuple[str, str], int] = {}
        for account, amount in self.entries:
            sums[("c", account)] = sums.get(("c", account), 0) + amount
        stored = {("c", account): balance for account, balance in self.balances.items()}
        assert ledger_differences(stored, sums) == []
        assert sum(self.balances.values()) == 0
        assert all(lot.remaining >= 0 for lot in self.lots.values())
        held = sum(lot.remaining for lot in self.lots.values())
        assert held == max(0, self.balances[WALLET])


operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 500), st.one_of(st.none(), st.integers(1, 30))),
    st.tuples(st.just("buy"), st.integers(1, 500), st.integers(1, 10_000)),
    st.tuples(st.just("burn"), st.integers(0, 400), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 15), st.just(0)),
    st.tuples(st.just("refund"), st.integers(0, 10), st.integers(1, 10_000)),
    st.tuples(st.just("settle"), st.integers(1, 300), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(allowance=st.integers(0, 300), operations=st.lists(operation, max_size=40))
def test_any_sequence_keeps_the_books_balanced(
    allowance: int, operations: list[tuple[str, int, int | None]]
) -> None:
    books = Books(allowance)
    purchases: list[tuple[int, int, int, int]] = []  # lot id, credits, amount, refunded
    for kind, number, extra in operations:
        if kind == "grant":
            expires = books.now + timedelta(days=extra) if extra else None
            books.apply(credit_in(books.balances[WALLET], number, GRANTS), expires, new=True)
        elif kind == "buy":
            assert extra is not None
            lot_id = books.apply(credit_in(books.balances[WALLET], number, PURCHASES), new=True)
            purchases.append((lot_id, number, extra, 0))
        elif kind == "burn":
            position = CreditPosition(books.balances[WALLET], books.allowance)
            movement = burn(position, list(books.lots.values()), number, books.now)
            if movement is None:
                assert number > position.available
            else:
                books.expire_due()
                books.apply(movement)
                assert books.balances[WALLET] >= -books.allowance
        elif kind == "wait":
            books.now += timedelta(days=number)
            books.expire_due()
        elif kind == "refund" and purchases:
            assert extra is not None
            index = number % len(purchases)
            lot_id, credits, amount, refunded = purchases[index]
            part = min(extra, amount - refunded)
            taken = clawback_credits(
                credits=credits, charge_amount=amount, refunded_before=refunded, refunded_now=part
            )
            purchases[index] = (lot_id, credits, amount, refunded + part)
            if taken:
                books.expire_due()
                books.apply(
                    debit(list(books.lots.values()), taken, PURCHASES, books.now, first=lot_id)
                )
        elif kind == "settle" and books.balances[WALLET] < 0:
            books.apply(credit_in(books.balances[WALLET], number, OVERDRAFT), new=True)
        books.check()
    # What came in equals what is held, spent, expired and taken back.
    came_in = -(books.balances[GRANTS] + books.balances[OVERDRAFT])
    assert came_in == (
        books.balances[WALLET]
        + books.balances[USAGE]
        + books.balances[EXPIRED]
        + books.balances[PURCHASES]
    )


@given(
    credits=st.integers(1, 10_000),
    amount=st.integers(1, 100_000),
    parts=st.lists(st.integers(1, 100_000), min_size=1, max_size=6),
)
def test_refunds_of_the_whole_charge_take_back_every_credit(
    credits: int, amount: int, parts: list[int]
) -> None:
    refunded, taken = 0, 0
    for part in [*parts, amount]:  # the last refund covers whatever is left
        part = min(part, amount - refunded)
        taken += clawback_credits(
            credits=credits, charge_amount=amount, refunded_before=refunded, refunded_now=part
        )
        refunded += part
    assert taken == credits


def test_burn_takes_the_lot_expiring_soonest_first_and_never_expiring_last() -> None:
    lots = [
        Lot(1, 100, None),
        Lot(2, 100, T0 + timedelta(days=9)),
        Lot(3, 100, T0 + timedelta(days=2)),
        Lot(4, 100, T0 - timedelta(days=1)),  # already expired: not spendable
    ]
    assert [lot.id for lot in burn_order(lots, T0)] == [3, 2, 1]
    movement = burn(CreditPosition(400, 0), lots, 150, T0)
    assert movement is not None
    assert movement.lots == ((3, 0), (2, 50))
    assert burn(CreditPosition(400, 0), lots, 301, T0) is None  # 300 spendable, no allowance
    assert burn(CreditPosition(400, 1), lots, 301, T0) is not None


def test_a_burn_past_the_allowance_is_refused() -> None:
    assert burn(CreditPosition(0, 0), [], 1, T0) is None
    overdraft = burn(CreditPosition(0, 50), [], 50, T0)
    assert overdraft is not None and overdraft.wallet_change == -50
    assert burn(CreditPosition(-50, 50), [], 1, T0) is None


def test_a_grant_repays_the_overdraft_first() -> None:
    movement = credit_in(-30, 100, GRANTS)
    assert (movement.wallet_change, movement.new_lot) == (100, 70)


def test_unbalanced_postings_are_refused() -> None:
    from tollgate.domain.credits import Posting

    with pytest.raises(ValueError, match="unbalanced"):
        Movement((Posting(WALLET, 5), Posting(GRANTS, -4)))


@pytest.mark.parametrize(
    ("now", "day", "shift", "expected"),
    [
        (datetime(2026, 12, 4, tzinfo=UTC), 5, -1, None),
        (datetime(2026, 12, 5, tzinfo=UTC), 5, -1, "2026-11"),
        (datetime(2027, 1, 28, tzinfo=UTC), 28, -1, "2026-12"),
        (datetime(2027, 1, 10, tzinfo=UTC), 1, 0, "2027-01"),
        (datetime(2027, 3, 10, tzinfo=UTC), 1, -3, "2026-12"),
    ],
)
def test_overdraft_range_is_the_shifted_month_from_the_invoice_day(
    now: datetime, day: int, shift: int, expected: str | None
) -> None:
    found = overdraft_range(now, invoice_day=day, shift=shift)
    assert (found.key if found else None) == expected
    if found is not None:
        assert found.start.day == 1 and found.end > found.start


def test_overdraft_invoiced_is_the_debt_at_the_range_end_still_owed() -> None:
    assert overdraft_to_invoice(balance_at_end=-80, balance_now=-120) == 80
    assert overdraft_to_invoice(balance_at_end=-80, balance_now=-20) == 20
    assert overdraft_to_invoice(balance_at_end=10, balance_now=-20) == 0
    with pytest.raises(ValueError):
        overdraft_range(T0, invoice_day=29, shift=-1)
