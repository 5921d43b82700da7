"""Credits: a double-entry ledger of grants, purchases, burns, expiries and overdraft invoices

The onboarding grants kept in `credit_grants` (0003) move into the ledger as grant transactions,
and that table goes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-20
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from tollgate.db.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(255)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ACCOUNTS = ("customer", "grants", "purchases", "usage", "expired", "overdraft")


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("allowance", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_accounts"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_credit_accounts_customer_id_customers"
        ),
        sa.UniqueConstraint(
            "customer_id", "account", name="uq_credit_accounts_customer_id_account"
        ),
    )
    op.create_table(
        "credit_transactions",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_transactions"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_credit_transactions_customer_id_customers"
        ),
        sa.UniqueConstraint(
            "customer_id",
            "idempotency_key",
            name="uq_credit_transactions_customer_id_idempotency_key",
        ),
    )
    op.create_table(
        "credit_entries",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("transaction_id", AUTO_ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_entries"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["credit_transactions.id"],
            name="fk_credit_entries_transaction_id_credit_transactions",
        ),
    )
    op.create_index(
        "ix_credit_entries_customer_id_account", "credit_entries", ["customer_id", "account"]
    )
    op.create_index("ix_credit_entries_transaction_id", "credit_entries", ["transaction_id"])
    op.create_table(
        "credit_lots",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("transaction_id", AUTO_ID, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("payment_intent", ID, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_lots"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_credit_lots_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["credit_transactions.id"],
            name="fk_credit_lots_transaction_id_credit_transactions",
        ),
    )
    op.create_index("ix_credit_lots_customer_id", "credit_lots", ["customer_id"])
    op.create_index("ix_credit_lots_expires_at", "credit_lots", ["expires_at"])
    op.create_index("ix_credit_lots_payment_intent", "credit_lots", ["payment_intent"])

    _move_grants_into_ledger()
    op.drop_table("credit_grants")


def _move_grants_into_ledger() -> None:
    connection = op.get_bind()
    meta = sa.MetaData()
    grants = sa.Table("credit_grants", meta, autoload_with=connection)
    accounts = sa.Table("credit_accounts", meta, autoload_with=connection)
    transactions = sa.Table("credit_transactions", meta, autoload_with=connection)
    entries = sa.Table("credit_entries", meta, autoload_with=connection)
    lots = sa.Table("credit_lots", meta, autoload_with=connection)
    balances: dict[str, int] = {}
    now = datetime.now(UTC)
    for grant in connection.execute(sa.select(grants).order_by(grants.c.id)).mappings():
        customer, credits, at = grant["customer_id"], grant["credits"], grant["granted_at"]
        transaction_id = connection.execute(
            transactions.insert()
            .values(
                customer_id=customer,
                kind="grant",
                amount=credits,
                reason=grant["reason"],
                idempotency_key=grant["reason"],
                actor="system",
                created_at=at,
            )
            .returning(transactions.c.id)
        ).scalar_one()
        lot_id = connection.execute(
            lots.insert()
            .values(
                customer_id=customer,
                transaction_id=transaction_id,
                source="grants",
                credits=credits,
                remaining=credits,
                created_at=at,
            )
            .returning(lots.c.id)
        ).scalar_one()
        connection.execute(
            entries.insert(),
            [
                {
                    "transaction_id": transaction_id,
                    "customer_id": customer,
                    "account": "grants",
                    "amount": -credits,
                    "lot_id": None,
                    "created_at": at,
                },
                {
                    "transaction_id": transaction_id,
                    "customer_id": customer,
                    "account": "customer",
                    "amount": credits,
                    "lot_id": lot_id,
                    "created_at": at,
                },
            ],
        )
        balances[customer] = balances.get(customer, 0) + credits
    for customer, credits in balances.items():
        connection.execute(
            accounts.insert(),
            [
                {
                    "customer_id": customer,
                    "account": account,
                    "balance": {"customer": credits, "grants": -credits}.get(account, 0),
                    "allowance": 0,
                    "updated_at": now,
                }
                for account in ACCOUNTS
            ],
        )


def downgrade() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_grants"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_credit_grants_customer_id_customers"
        ),
        sa.UniqueConstraint("customer_id", "reason", name="uq_credit_grants_customer_id_reason"),
    )
    op.create_index("ix_credit_grants_customer_id", "credit_grants", ["customer_id"])
    op.execute(
        "INSERT INTO credit_grants (customer_id, credits, reason, granted_at) "
        "SELECT customer_id, amount, reason, created_at FROM credit_transactions "
        "WHERE kind = 'grant' AND idempotency_key = 'onboarding'"
    )
    op.drop_table("credit_lots")
    op.drop_table("credit_entries")
    op.drop_table("credit_transactions")
    op.drop_table("credit_accounts")
