"""The credits ledger's statements: accounts, transactions, entries and lots.

A write locks the customer's wallet row first (PostgreSQL `FOR UPDATE`; on SQLite the write
transaction holds the database's write lock already), so one customer's ledger changes one
transaction at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from tollgate.db import execution
from tollgate.db.dialects import insert_if_new
from tollgate.db.tables import (
    CHARGES,
    CREDIT_ACCOUNTS,
    CREDIT_ENTRIES,
    CREDIT_LOTS,
    CREDIT_TRANSACTIONS,
    CUSTOMERS,
    REFUNDS,
    SUBSCRIPTIONS,
)
from tollgate.domain.credits import WALLET, Lot

_WALLET = (CREDIT_ACCOUNTS.c.customer_id == bindparam("customer_id")) & (
    CREDIT_ACCOUNTS.c.account == WALLET
)
_WALLET_ROW = select(CREDIT_ACCOUNTS.c.balance, CREDIT_ACCOUNTS.c.allowance).where(_WALLET)
_LOCKED_WALLET_ROW = _WALLET_ROW.with_for_update()
_OPEN_LOTS = select(CREDIT_LOTS.c.id, CREDIT_LOTS.c.remaining, CREDIT_LOTS.c.expires_at).where(
    CREDIT_LOTS.c.customer_id == bindparam("customer_id"), CREDIT_LOTS.c.remaining > 0
)
_BY_KEY = select(CREDIT_TRANSACTIONS).where(
    CREDIT_TRANSACTIONS.c.customer_id == bindparam("customer_id"),
    CREDIT_TRANSACTIONS.c.idempotency_key == bindparam("key"),
)
_INSERT_TRANSACTION = insert(CREDIT_TRANSACTIONS).returning(CREDIT_TRANSACTIONS.c.id)
_INSERT_LOT = insert(CREDIT_LOTS).returning(CREDIT_LOTS.c.id)
_MOVE_BALANCE = (
    update(CREDIT_ACCOUNTS)
    .where(
        CREDIT_ACCOUNTS.c.customer_id == bindparam("owner"),
        CREDIT_ACCOUNTS.c.account == bindparam("name"),
    )
    .values(balance=CREDIT_ACCOUNTS.c.balance + bindparam("delta"), updated_at=bindparam("now"))
)
_SET_REMAINING = (
    update(CREDIT_LOTS)
    .where(CREDIT_LOTS.c.id == bindparam("lot"))
    .values(remaining=bindparam("left"))
)
# (The parameters are not named as columns: SQLAlchemy keeps those names for the SET clause.)
_SET_ALLOWANCE = (
    update(CREDIT_ACCOUNTS)
    .where(CREDIT_ACCOUNTS.c.customer_id == bindparam("owner"), CREDIT_ACCOUNTS.c.account == WALLET)
    .values(allowance=bindparam("new_allowance"), updated_at=bindparam("now"))
)


# -- one customer's ledger ----------------------------------------------------------------------


def open_accounts(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Create accounts (customer, account, balance, allowance, updated at), unless they exist."""
    statement = insert_if_new(
        connection, CREDIT_ACCOUNTS, index_elements=("customer_id", "account")
    )
    connection.execute(statement, list(rows))


def wallet(connection: Connection, customer_id: str, *, lock: bool) -> Any:
    """Return the customer's wallet (balance, allowance), locked with `lock`; None if none."""
    query = _LOCKED_WALLET_ROW if lock else _WALLET_ROW
    return connection.execute(query, {"customer_id": customer_id}).first()


def set_allowance(connection: Connection, customer_id: str, allowance: int, now: datetime) -> None:
    """Set how far below zero the customer's wallet may go."""
    connection.execute(
        _SET_ALLOWANCE, {"owner": customer_id, "new_allowance": allowance, "now": now}
    )


def open_lots(connection: Connection, customer_id: str) -> list[Lot]:
    """Return the customer's lots with credits left."""
    return [
        Lot(int(row.id), int(row.remaining), row.expires_at)
        for row in connection.execute(_OPEN_LOTS, {"customer_id": customer_id})
    ]


def transaction_by_key(connection: Connection, customer_id: str, key: str) -> Any:
    """Return the customer's transaction made with this idempotency key, or None."""
    return connection.execute(_BY_KEY, {"customer_id": customer_id, "key": key}).mappings().first()


def lot_expiry(connection: Connection, transaction_id: int) -> datetime | None:
    """Return when the lot a transaction brought in expires (None: never, or no lot)."""
    return connection.scalar(
        select(CREDIT_LOTS.c.expires_at).where(CREDIT_LOTS.c.transaction_id == transaction_id)
    )


def insert_transaction(connection: Connection, row: Mapping[str, Any]) -> int:
    """Insert a transaction row; return its id."""
    return int(connection.execute(_INSERT_TRANSACTION, dict(row)).scalar_one())


def insert_lot(connection: Connection, row: Mapping[str, Any]) -> int:
    """Insert a lot; return its id."""
    return int(connection.execute(_INSERT_LOT, dict(row)).scalar_one())


def post(
    connection: Connection,
    *,
    customer_id: str,
    entries: list[dict[str, Any]],
    lots_left: Sequence[tuple[int, int]],
    deltas: Mapping[str, int],
    now: datetime,
) -> None:
    """Write a transaction's entries, the lots it drew from and the accounts' new balances.

    In one round trip on PostgreSQL.
    """
    writes: list[execution.Write] = [(insert(CREDIT_ENTRIES), entries)]
    if lots_left:
        writes.append((_SET_REMAINING, [{"lot": lot, "left": left} for lot, left in lots_left]))
    moved = [
        {"owner": customer_id, "name": account, "delta": delta, "now": now}
        for account, delta in sorted(deltas.items())
        if delta
    ]
    if moved:
        writes.append((_MOVE_BALANCE, moved))
    execution.run(connection, writes)


def delete_customer(connection: Connection, customer_id: str) -> None:
    """Delete every credits row of a customer."""
    for table in (CREDIT_ENTRIES, CREDIT_LOTS, CREDIT_TRANSACTIONS, CREDIT_ACCOUNTS):
        connection.execute(table.delete().where(table.c.customer_id == customer_id))


def customer_deleted(connection: Connection, customer_id: str) -> bool | None:
    """Return whether the customer is deleted; None when there is no such customer."""
    found = connection.execute(
        select(CUSTOMERS.c.deleted).where(CUSTOMERS.c.id == customer_id)
    ).first()
    return None if found is None else bool(found[0])


def done_keys(
    connection: Connection, keys: Iterable[str], customer_id: str | None = None
) -> set[str]:
    """Return which of these idempotency keys have a transaction (of the customer, if given)."""
    query = select(CREDIT_TRANSACTIONS.c.idempotency_key).where(
        CREDIT_TRANSACTIONS.c.idempotency_key.in_(sorted(keys))
    )
    if customer_id is not None:
        query = query.where(CREDIT_TRANSACTIONS.c.customer_id == customer_id)
    return set(connection.scalars(query))


# -- reading the ledger --------------------------------------------------------------------------


def newest_transactions(
    connection: Connection, customer_id: str, *, ids: Iterable[int] | None, limit: int
) -> list[Any]:
    """Return the customer's transactions (these ids only, if given), newest first."""
    query = select(CREDIT_TRANSACTIONS).where(CREDIT_TRANSACTIONS.c.customer_id == customer_id)
    if ids is not None:
        query = query.where(CREDIT_TRANSACTIONS.c.id.in_(list(ids)))
    return list(connection.execute(query.order_by(CREDIT_TRANSACTIONS.c.id.desc()).limit(limit)))


def wallet_amounts(connection: Connection, transaction_ids: Sequence[int]) -> dict[int, int]:
    """Return what each transaction put into (+) or took from (-) its wallet."""
    rows = connection.execute(
        select(CREDIT_ENTRIES.c.transaction_id, func.sum(CREDIT_ENTRIES.c.amount))
        .where(
            CREDIT_ENTRIES.c.transaction_id.in_(transaction_ids),
            CREDIT_ENTRIES.c.account == WALLET,
        )
        .group_by(CREDIT_ENTRIES.c.transaction_id)
    )
    return {int(transaction_id): int(amount) for transaction_id, amount in rows}


def lots_of(connection: Connection, transaction_ids: Sequence[int]) -> dict[int, Any]:
    """Return the lot (expires_at, remaining) each of these transactions brought in."""
    rows = connection.execute(
        select(
            CREDIT_LOTS.c.transaction_id, CREDIT_LOTS.c.expires_at, CREDIT_LOTS.c.remaining
        ).where(CREDIT_LOTS.c.transaction_id.in_(transaction_ids))
    )
    return {int(row.transaction_id): row for row in rows}


def customers_with_expired_lots(connection: Connection, now: datetime, limit: int) -> list[str]:
    """Return customers (in id order) holding credits past their expiry."""
    return list(
        connection.scalars(
            select(CREDIT_LOTS.c.customer_id)
            .where(CREDIT_LOTS.c.remaining > 0, CREDIT_LOTS.c.expires_at <= now)
            .group_by(CREDIT_LOTS.c.customer_id)
            .order_by(CREDIT_LOTS.c.customer_id)
            .limit(limit)
        )
    )


def started_subscriptions(
    connection: Connection, plans: Sequence[str], statuses: Sequence[str], now: datetime
) -> list[Any]:
    """Return subscriptions on these plans, in these statuses, whose period has started."""
    return list(
        connection.execute(
            select(
                SUBSCRIPTIONS.c.id,
                SUBSCRIPTIONS.c.customer_id,
                SUBSCRIPTIONS.c.plan,
                SUBSCRIPTIONS.c.current_period_start,
                SUBSCRIPTIONS.c.current_period_end,
            ).where(
                SUBSCRIPTIONS.c.plan.in_(plans),
                SUBSCRIPTIONS.c.status.in_(statuses),
                SUBSCRIPTIONS.c.current_period_start.is_not(None),
                SUBSCRIPTIONS.c.current_period_start <= now,
            )
        )
    )


def overdrawn_wallets(connection: Connection) -> list[Any]:
    """Return (customer_id, balance, stripe_customer_id) of wallets below zero billed in Stripe."""
    return list(
        connection.execute(
            select(
                CREDIT_ACCOUNTS.c.customer_id,
                CREDIT_ACCOUNTS.c.balance,
                CUSTOMERS.c.stripe_customer_id,
            )
            .join(CUSTOMERS, CUSTOMERS.c.id == CREDIT_ACCOUNTS.c.customer_id)
            .where(
                CREDIT_ACCOUNTS.c.account == WALLET,
                CREDIT_ACCOUNTS.c.balance < 0,
                CUSTOMERS.c.offline.is_(False),
                CUSTOMERS.c.stripe_customer_id.is_not(None),
            )
            .order_by(CREDIT_ACCOUNTS.c.customer_id)
        )
    )


def wallet_balance_before(connection: Connection, customer_id: str, end: datetime) -> int:
    """Return the customer's wallet balance as it was just before `end`."""
    return int(
        connection.execute(
            select(func.coalesce(func.sum(CREDIT_ENTRIES.c.amount), 0)).where(
                CREDIT_ENTRIES.c.customer_id == customer_id,
                CREDIT_ENTRIES.c.account == WALLET,
                CREDIT_ENTRIES.c.created_at < end,
            )
        ).scalar_one()
    )


def account_balances(connection: Connection) -> dict[tuple[str, str], int]:
    """Return every account's balance, by (customer, account)."""
    rows = connection.execute(
        select(CREDIT_ACCOUNTS.c.customer_id, CREDIT_ACCOUNTS.c.account, CREDIT_ACCOUNTS.c.balance)
    )
    return {(customer, account): int(balance) for customer, account, balance in rows}


def entry_sums(connection: Connection) -> dict[tuple[str, str], int]:
    """Return the sum of every account's entries, by (customer, account)."""
    rows = connection.execute(
        select(
            CREDIT_ENTRIES.c.customer_id,
            CREDIT_ENTRIES.c.account,
            func.sum(CREDIT_ENTRIES.c.amount),
        ).group_by(CREDIT_ENTRIES.c.customer_id, CREDIT_ENTRIES.c.account)
    )
    return {(customer, account): int(total) for customer, account, total in rows}


def credits_in_lots(connection: Connection) -> dict[str, int]:
    """Return the credits left in each customer's lots."""
    rows = connection.execute(
        select(CREDIT_LOTS.c.customer_id, func.sum(CREDIT_LOTS.c.remaining)).group_by(
            CREDIT_LOTS.c.customer_id
        )
    )
    return {customer: int(total or 0) for customer, total in rows}


# -- purchases and their refunds -----------------------------------------------------------------


def charge(connection: Connection, charge_id: str) -> Any:
    """Return the mirrored charge, or None."""
    return connection.execute(select(CHARGES).where(CHARGES.c.id == charge_id)).mappings().first()


def charges_of_payment(connection: Connection, payment_intent: str) -> list[str]:
    """Return the ids of the mirrored charges of a PaymentIntent."""
    return list(
        connection.scalars(select(CHARGES.c.id).where(CHARGES.c.payment_intent == payment_intent))
    )


def purchased_lot(connection: Connection, payment_intent: str) -> Any:
    """Return the lot (id, customer_id, credits) a PaymentIntent bought, or None."""
    return (
        connection.execute(
            select(CREDIT_LOTS.c.id, CREDIT_LOTS.c.customer_id, CREDIT_LOTS.c.credits)
            .where(CREDIT_LOTS.c.payment_intent == payment_intent)
            .order_by(CREDIT_LOTS.c.id)
        )
        .mappings()
        .first()
    )


def refunds_of(connection: Connection, charge_id: str) -> list[Any]:
    """Return the charge's refunds that took or are taking money back, oldest id first."""
    return list(
        connection.execute(
            select(REFUNDS.c.id, REFUNDS.c.amount)
            .where(REFUNDS.c.charge_id == charge_id, REFUNDS.c.status.in_(("succeeded", "pending")))
            .order_by(REFUNDS.c.id)
        )
    )
