"""The credits ledger's steps that run inside a transaction another use case owns.

Creating a customer opens its accounts, recording usage burns credits, a webhook grants a
purchase or takes refunded credits back, reconciliation checks the books: each in the caller's
transaction, so the ledger changes exactly when the change that causes it commits.

Every write locks the customer's wallet first, then reads the balance and lots it changes, so
concurrent burns never take a wallet below its allowance. Each change is one transaction whose
entries sum to zero (see tollgate.domain.credits), keyed per customer, so a repeat (an API
retry, a redelivered webhook, a job run twice) writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.config import Settings
from tollgate.db.queries import credits as ledger
from tollgate.db.queries.changes import note_customer_changes
from tollgate.domain.credits import (
    ACCOUNTS,
    BURN,
    CLAWBACK,
    EXPIRY,
    GRANT,
    GRANTS,
    PURCHASE,
    PURCHASES,
    WALLET,
    CreditPosition,
    Lot,
    Movement,
    burn,
    clawback_credits,
    credit_in,
    debit,
    expire,
    ledger_differences,
    spendable_balance,
)
from tollgate.domain.errors import Conflict


@dataclass(frozen=True)
class NewLot:
    """Credits a transaction brings in as a lot of their own."""

    source: str
    expires_at: datetime | None = None
    payment_intent: str | None = None


# -- accounts and positions -----------------------------------------------------------------


def open_credit_accounts(
    connection: Connection, customer_id: str, *, allowance: int, now: datetime
) -> None:
    """Create the customer's wallet and system accounts, unless they exist."""
    ledger.open_accounts(
        connection,
        [
            {
                "customer_id": customer_id,
                "account": account,
                "balance": 0,
                "allowance": allowance if account == WALLET else 0,
                "updated_at": now,
            }
            for account in ACCOUNTS
        ],
    )


def lock_wallet(connection: Connection, customer_id: str, now: datetime) -> CreditPosition:
    """Lock the customer's wallet (opened if missing); return its balance and allowance."""
    row = ledger.wallet(connection, customer_id, lock=True)
    if row is None:
        open_credit_accounts(connection, customer_id, allowance=0, now=now)
        row = ledger.wallet(connection, customer_id, lock=True)
        assert row is not None
    return CreditPosition(int(row.balance), int(row.allowance))


def credit_position(
    connection: Connection, customer_id: str, *, now: datetime | None = None
) -> CreditPosition:
    """Return the customer's wallet balance and overdraft allowance (zeros without a wallet).

    With `now`, the balance is what may be spent then: credits of lots already past their
    expiry (not yet written off by the expiry job) do not count, as a burn would not spend them.
    """
    row = ledger.wallet(connection, customer_id, lock=False)
    if row is None:
        return CreditPosition(0, 0)
    balance = int(row.balance)
    if now is not None:
        balance = spendable_balance(balance, ledger.open_lots(connection, customer_id), now)
    return CreditPosition(balance, int(row.allowance))


# -- recording a change --------------------------------------------------------------------


def record(
    connection: Connection,
    *,
    customer_id: str,
    kind: str,
    amount: int,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    movement: Movement,
    lot: NewLot | None = None,
) -> int:
    """Write one transaction: its row, its entries, the lots it changes and the balances."""
    transaction_id = ledger.insert_transaction(
        connection,
        {
            "customer_id": customer_id,
            "kind": kind,
            "amount": amount,
            "reason": reason,
            "idempotency_key": key,
            "actor": actor,
            "created_at": now,
        },
    )
    new_lot_id = None
    if lot is not None:
        new_lot_id = ledger.insert_lot(
            connection,
            {
                "customer_id": customer_id,
                "transaction_id": transaction_id,
                "source": lot.source,
                "credits": amount,
                "remaining": movement.new_lot,
                "expires_at": lot.expires_at,
                "payment_intent": lot.payment_intent,
                "created_at": now,
            },
        )
    if not movement.postings:
        return transaction_id
    entries = [
        {
            "transaction_id": transaction_id,
            "customer_id": customer_id,
            "account": posting.account,
            "amount": posting.amount,
            "lot_id": posting.lot_id
            if posting.lot_id is not None
            else (new_lot_id if posting.account == WALLET and posting.amount > 0 else None),
            "created_at": now,
        }
        for posting in movement.postings
    ]
    deltas: dict[str, int] = {}
    for posting in movement.postings:
        deltas[posting.account] = deltas.get(posting.account, 0) + posting.amount
    ledger.post(
        connection,
        customer_id=customer_id,
        entries=entries,
        lots_left=movement.lots,
        deltas=deltas,
        now=now,
    )
    return transaction_id


def expire_due(
    connection: Connection, customer_id: str, lots: list[Lot], now: datetime
) -> list[Lot]:
    """Write off the lots past their expiry; returns the lots still open."""
    still_open = []
    for lot in lots:
        if not lot.expired(now):
            still_open.append(lot)
            continue
        record(
            connection,
            customer_id=customer_id,
            kind=EXPIRY,
            amount=lot.remaining,
            reason="credits expired",
            key=f"expire:{lot.id}",
            actor="system",
            now=now,
            movement=expire(lot),
        )
    return still_open


# -- burns and grants ----------------------------------------------------------------------


def burn_for_usage(
    connection: Connection,
    *,
    customer_id: str,
    feature: str,
    units: int,
    credits_per_unit: int,
    usage_key: str,
    now: datetime,
) -> bool:
    """Burn the credits usage costs, once per `usage_key`; False (nothing written) past allowance.

    Runs in the caller's transaction, which records the usage itself and notes the change.
    """
    credits = units * credits_per_unit
    if credits <= 0:
        return True
    position = lock_wallet(connection, customer_id, now)
    key = f"usage:{usage_key}"
    if ledger.transaction_by_key(connection, customer_id, key) is not None:
        return True
    lots = ledger.open_lots(connection, customer_id)
    movement = burn(position, lots, credits, now)
    if movement is None:
        return False
    expire_due(connection, customer_id, lots, now)
    record(
        connection,
        customer_id=customer_id,
        kind=BURN,
        amount=credits,
        reason=f"{units} {feature} at {credits_per_unit} credits each",
        key=key,
        actor="system",
        now=now,
        movement=movement,
    )
    return True


def grant_credits_in(
    connection: Connection,
    *,
    customer_id: str,
    credits: int,
    reason: str,
    key: str,
    actor: str,
    now: datetime,
    expires_at: datetime | None = None,
    kind: str = GRANT,
    payment_intent: str | None = None,
) -> tuple[int, bool]:
    """Grant (or sell) credits in the caller's transaction; returns its id and whether it is new.

    A repeat of the key with the same credits, reason and expiry is the same grant; with others
    it is a Conflict.
    """
    position = lock_wallet(connection, customer_id, now)
    existing = ledger.transaction_by_key(connection, customer_id, key)
    if existing is not None:
        same = (
            existing["kind"],
            existing["amount"],
            existing["reason"],
            ledger.lot_expiry(connection, existing["id"]),
        ) == (kind, credits, reason, expires_at)
        if not same:
            raise Conflict(
                f"idempotency_key {key!r} was used for another change to these credits "
                f"({existing['kind']} of {existing['amount']}: {existing['reason']!r})",
                param="idempotency_key",
            )
        return int(existing["id"]), False
    source = PURCHASES if kind == PURCHASE else GRANTS
    transaction_id = record(
        connection,
        customer_id=customer_id,
        kind=kind,
        amount=credits,
        reason=reason,
        key=key,
        actor=actor,
        now=now,
        movement=credit_in(position.balance, credits, source),
        lot=NewLot(source, expires_at, payment_intent),
    )
    note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return transaction_id, True


def grant_onboarding_credits(
    connection: Connection, *, customer_id: str, settings: Settings, now: datetime
) -> None:
    """Open a new customer's accounts with the allowance set, and grant its onboarding credits."""
    open_credit_accounts(
        connection, customer_id, allowance=settings.credit_overdraft_allowance, now=now
    )
    if settings.onboard_credits:
        grant_credits_in(
            connection,
            customer_id=customer_id,
            credits=settings.onboard_credits,
            reason="onboarding",
            key="onboarding",
            actor="system",
            now=now,
        )


def forget_credits(connection: Connection, customer_id: str) -> None:
    """Delete every credits row of a customer that is being removed (bad input undone)."""
    ledger.delete_customer(connection, customer_id)


def grant_plan_credits_for_period(
    connection: Connection,
    *,
    customer_id: str,
    subscription_id: str,
    plan: str,
    credits: int,
    period_start: datetime,
    period_end: datetime | None,
    now: datetime,
) -> tuple[int, bool]:
    """Grant a plan's period credits in the caller's transaction, once per subscription period."""
    return grant_credits_in(
        connection,
        customer_id=customer_id,
        credits=credits,
        reason=f"plan {plan} credits for the period from {period_start.date().isoformat()}",
        key=plan_credits_key(subscription_id, period_start),
        actor="system",
        now=now,
        expires_at=period_end if period_end is not None and period_end > now else None,
    )


def plan_credits_key(subscription_id: str, period_start: datetime) -> str:
    """Return the key of a subscription period's plan credits."""
    return f"plan:{subscription_id}:{int(period_start.timestamp())}"


# -- purchases and refunds (webhooks, in the handler's transaction) ----------------------------


def grant_purchased_credits(
    connection: Connection,
    *,
    customer_id: str,
    session: Mapping[str, Any],
    now: datetime,
    actor: str,
) -> bool:
    """Grant the credits a paid Checkout Session bought (once per session); False if none."""
    metadata = session.get("metadata") or {}
    pack, raw_credits = metadata.get("tollgate_pack"), metadata.get("tollgate_credits")
    if session.get("mode") != "payment" or not pack or not str(raw_credits or "").isdigit():
        return False
    if session.get("payment_status") != "paid":
        return False
    payment_intent = session.get("payment_intent")
    if isinstance(payment_intent, Mapping):
        payment_intent = payment_intent.get("id")
    _, created = grant_credits_in(
        connection,
        customer_id=customer_id,
        credits=int(str(raw_credits)),
        reason=f"credit pack {pack}",
        key=f"purchase:{session['id']}",
        actor=actor,
        now=now,
        kind=PURCHASE,
        payment_intent=str(payment_intent) if payment_intent else None,
    )
    if created and payment_intent:
        # A refund may have been mirrored before this event arrived: take its credits back now.
        for charge_id in ledger.charges_of_payment(connection, str(payment_intent)):
            claw_back_refunds(connection, charge_id=charge_id, now=now, actor=actor)
    return True


def claw_back_refunds(connection: Connection, *, charge_id: str, now: datetime, actor: str) -> int:
    """Take back purchased credits in proportion to each refund of the charge, once per refund.

    Reads the charge and refunds the handler mirrored; returns the credits taken back now.
    """
    charge = ledger.charge(connection, charge_id)
    if charge is None or not charge["payment_intent"] or charge["amount"] <= 0:
        return 0
    lot = ledger.purchased_lot(connection, charge["payment_intent"])
    if lot is None:
        return 0
    customer_id = lot["customer_id"]
    lock_wallet(connection, customer_id, now)
    keys = {f"refund:{refund.id}": refund for refund in ledger.refunds_of(connection, charge_id)}
    done = ledger.done_keys(connection, keys, customer_id)
    refunded_before = sum(int(keys[key].amount) for key in done)
    taken = 0
    for key, refund in keys.items():
        if key in done:
            continue
        credits = clawback_credits(
            credits=int(lot["credits"]),
            charge_amount=int(charge["amount"]),
            refunded_before=refunded_before,
            refunded_now=int(refund.amount),
        )
        refunded_before += int(refund.amount)
        lots = expire_due(connection, customer_id, ledger.open_lots(connection, customer_id), now)
        movement = (
            debit(lots, credits, PURCHASES, now, first=int(lot["id"])) if credits else Movement(())
        )
        record(
            connection,
            customer_id=customer_id,
            kind=CLAWBACK,
            amount=credits,
            reason=f"refund {refund.id} of charge {charge_id}",
            key=key,
            actor=actor,
            now=now,
            movement=movement,
        )
        taken += credits
    if len(done) < len(keys):
        note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return taken


# -- the ledger's own check (reconciliation) ----------------------------------------------------


def ledger_problems(connection: Connection) -> list[str]:
    """Return every account whose balance is not the sum of its entries, and unbalanced books."""
    balances = ledger.account_balances(connection)
    problems = ledger_differences(balances, ledger.entry_sums(connection))
    lots = ledger.credits_in_lots(connection)
    for (customer_id, account), balance in sorted(balances.items()):
        held = lots.get(customer_id, 0)
        if account == WALLET and held != max(0, balance):
            problems.append(
                f"credits of customer {customer_id!r}: lots hold {held} "
                f"but the wallet's balance is {balance}"
            )
    return problems
