"""The credits ledger: accounts, transactions, entries and lots."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollgate.db.models.base import AUTO_ID, STRIPE_ID, Base
from tollgate.db.types import UTCDateTime


class CreditAccount(Base):
    """One account of a customer's credits ledger, with its balance (the sum of its entries).

    Every customer has its wallet (`customer`) and its own system accounts (`grants`,
    `purchases`, `usage`, `expired`, `overdraft`), so a burn locks only its customer's rows.
    """

    __tablename__ = "credit_accounts"
    __table_args__ = (UniqueConstraint("customer_id", "account"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    account: Mapped[str] = mapped_column(String(16))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # How far below zero the wallet may go (kept on the wallet row only; 0 on the others).
    allowance: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditTransaction(Base):
    """One balanced change to a customer's credits: why, who, and its key (once per customer)."""

    __tablename__ = "credit_transactions"
    __table_args__ = (UniqueConstraint("customer_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    # grant | purchase | burn | expiry | clawback | overdraft_invoice
    kind: Mapped[str] = mapped_column(String(32))
    # The credits asked for (a grant's size, a burn's units times price): a repeat must match.
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # "api:<key name>", "system" or "stripe:<event id>"
    actor: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditEntry(Base):
    """One side of a credits transaction: a signed amount into one account (of one lot)."""

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_customer_id_account", "customer_id", "account"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("credit_transactions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(STRIPE_ID))
    account: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    lot_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CreditLot(Base):
    """Credits that came in together (a grant or a purchase), what is left, when they expire."""

    __tablename__ = "credit_lots"
    __table_args__ = (Index("ix_credit_lots_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("credit_transactions.id"))
    source: Mapped[str] = mapped_column(String(16))
    credits: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A purchase's PaymentIntent, so a refund of its charge finds the credits to take back.
    payment_intent: Mapped[str | None] = mapped_column(String(STRIPE_ID), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
