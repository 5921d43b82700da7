"""Credits: grants, purchases, burns by usage, expiry, clawback and overdraft, on a ledger.

Every write locks the customer's wallet account row first (PostgreSQL `FOR UPDATE`; on SQLite
the write transaction holds the database's write lock already), then reads the balance and lots
it changes, so concurrent burns never take a wallet below its allowance. Each change is one
transaction whose entries sum to zero (see tollgate.domain.credits), keyed per customer, so a
repeat (an API retry, a redelivered webhook, a job run twice) writes nothing.

Functions taking a `Connection` run inside a transaction their caller owns (usage ingestion,
webhook handlers); the others own theirs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tollgate.clock import Clock
from tollgate.config import Settings
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
from tollgate.db.unit_of_work import Database, execute_writes
from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_sync import overdraft_price_lookup_key, pack_price_lookup_key
from tollgate.domain.credits import (
    ACCOUNTS,
    BURN,
    CLAWBACK,
    EXPIRY,
    GRANT,
    GRANTS,
    MAX_CREDITS,
    OVERDRAFT,
    OVERDRAFT_INVOICE,
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
    overdraft_range,
    overdraft_to_invoice,
    spendable_balance,
)
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.domain.subscriptions import request_id
from tollgate.services.changes import note_customer_changes
from tollgate.stripe.gateway import StripeGateway
from tollgate.views import CheckoutSession, CreditEntryView, CreditsView

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
LIVE_STATUSES = ("active", "trialing")
_WALLET_ROW = (
    select(CREDIT_ACCOUNTS.c.balance, CREDIT_ACCOUNTS.c.allowance)
    .where(
        CREDIT_ACCOUNTS.c.customer_id == bindparam("customer_id"),
        CREDIT_ACCOUNTS.c.account == WALLET,
    )
    .with_for_update()
)
_OPEN_LOTS = select(CREDIT_LOTS.c.id, CREDIT_LOTS.c.remaining, CREDIT_LOTS.c.expires_at).where(
    CREDIT_LOTS.c.customer_id == bindparam("customer_id"), CREDIT_LOTS.c.remaining > 0
)
_BY_KEY = select(CREDIT_TRANSACTIONS).where(
    CREDIT_TRANSACTIONS.c.customer_id == bindparam("customer_id"),
    CREDIT_TRANSACTIONS.c.idempotency_key == bindparam("key"),
)
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


@dataclass(frozen=True)
class GrantResult:
    """A grant, and whether this request made it (False: a repeat of the same request)."""

    entry: CreditEntryView
    created: bool


@dataclass(frozen=True)
class _NewLot:
    source: str
    expires_at: datetime | None = None
    payment_intent: str | None = None


# -- the ledger's primitives, inside a caller's transaction ---------------------------------------


def open_credit_accounts(
    connection: Connection, customer_id: str, *, allowance: int, now: datetime
) -> None:
    """Create the customer's wallet and system accounts, unless they exist."""
    rows = [
        {
            "customer_id": customer_id,
            "account": account,
            "balance": 0,
            "allowance": allowance if account == WALLET else 0,
            "updated_at": now,
        }
        for account in ACCOUNTS
    ]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(CREDIT_ACCOUNTS).on_conflict_do_nothing(
        index_elements=["customer_id", "account"]
    )
    connection.execute(statement, rows)


def _lock_wallet(connection: Connection, customer_id: str, now: datetime) -> CreditPosition:
    row = connection.execute(_WALLET_ROW, {"customer_id": customer_id}).first()
    if row is None:
        open_credit_accounts(connection, customer_id, allowance=0, now=now)
        row = connection.execute(_WALLET_ROW, {"customer_id": customer_id}).one()
    return CreditPosition(int(row.balance), int(row.allowance))


def _open_lots(connection: Connection, customer_id: str) -> list[Lot]:
    return [
        Lot(int(row.id), int(row.remaining), row.expires_at)
        for row in connection.execute(_OPEN_LOTS, {"customer_id": customer_id})
    ]


def _find(connection: Connection, customer_id: str, key: str) -> RowMapping | None:
    return connection.execute(_BY_KEY, {"customer_id": customer_id, "key": key}).mappings().first()


def _record(
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
    lot: _NewLot | None = None,
) -> int:
    """Write one transaction: its row, its entries, the lots it changes and the balances."""
    transaction_id = connection.execute(
        insert(CREDIT_TRANSACTIONS)
        .values(
            customer_id=customer_id,
            kind=kind,
            amount=amount,
            reason=reason,
            idempotency_key=key,
            actor=actor,
            created_at=now,
        )
        .returning(CREDIT_TRANSACTIONS.c.id)
    ).scalar_one()
    new_lot_id = None
    if lot is not None:
        new_lot_id = connection.execute(
            insert(CREDIT_LOTS)
            .values(
                customer_id=customer_id,
                transaction_id=transaction_id,
                source=lot.source,
                credits=amount,
                remaining=movement.new_lot,
                expires_at=lot.expires_at,
                payment_intent=lot.payment_intent,
                created_at=now,
            )
            .returning(CREDIT_LOTS.c.id)
        ).scalar_one()
    if not movement.postings:
        return int(transaction_id)
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
    writes: list[tuple[Any, Any]] = [(insert(CREDIT_ENTRIES), entries)]
    if movement.lots:
        writes.append((_SET_REMAINING, [{"lot": i, "left": left} for i, left in movement.lots]))
    writes.append(
        (
            _MOVE_BALANCE,
            [
                {"owner": customer_id, "name": account, "delta": delta, "now": now}
                for account, delta in sorted(deltas.items())
                if delta
            ],
        )
    )
    execute_writes(connection, writes)
    return int(transaction_id)


def _expire_due(
    connection: Connection, customer_id: str, lots: list[Lot], now: datetime
) -> list[Lot]:
    """Write off the lots past their expiry; returns the lots still open."""
    still_open = []
    for lot in lots:
        if not lot.expired(now):
            still_open.append(lot)
            continue
        _record(
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


def credit_position(
    connection: Connection, customer_id: str, *, now: datetime | None = None
) -> CreditPosition:
    """Return the customer's wallet balance and overdraft allowance (zeros without a wallet).

    With `now`, the balance is what may be spent then: credits of lots already past their
    expiry (not yet written off by the expiry job) do not count, as a burn would not spend them.
    """
    row = connection.execute(
        select(CREDIT_ACCOUNTS.c.balance, CREDIT_ACCOUNTS.c.allowance).where(
            CREDIT_ACCOUNTS.c.customer_id == customer_id, CREDIT_ACCOUNTS.c.account == WALLET
        )
    ).first()
    if row is None:
        return CreditPosition(0, 0)
    balance = int(row.balance)
    if now is not None:
        balance = spendable_balance(balance, _open_lots(connection, customer_id), now)
    return CreditPosition(balance, int(row.allowance))


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
    position = _lock_wallet(connection, customer_id, now)
    key = f"usage:{usage_key}"
    if _find(connection, customer_id, key) is not None:
        return True
    lots = _open_lots(connection, customer_id)
    movement = burn(position, lots, credits, now)
    if movement is None:
        return False
    _expire_due(connection, customer_id, lots, now)
    _record(
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
    position = _lock_wallet(connection, customer_id, now)
    existing = _find(connection, customer_id, key)
    if existing is not None:
        lot_expiry = connection.execute(
            select(CREDIT_LOTS.c.expires_at).where(CREDIT_LOTS.c.transaction_id == existing["id"])
        ).scalar()
        same = (existing["kind"], existing["amount"], existing["reason"], lot_expiry) == (
            kind,
            credits,
            reason,
            expires_at,
        )
        if not same:
            raise Conflict(
                f"idempotency_key {key!r} was used for another change to these credits "
                f"({existing['kind']} of {existing['amount']}: {existing['reason']!r})",
                param="idempotency_key",
            )
        return int(existing["id"]), False
    source = PURCHASES if kind == PURCHASE else GRANTS
    transaction_id = _record(
        connection,
        customer_id=customer_id,
        kind=kind,
        amount=credits,
        reason=reason,
        key=key,
        actor=actor,
        now=now,
        movement=credit_in(position.balance, credits, source),
        lot=_NewLot(source, expires_at, payment_intent),
    )
    note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return transaction_id, True


# -- grants -----------------------------------------------------------------------------------


def check_grant(
    *, amount: Any, reason: Any, idempotency_key: Any, expires_at: Any, now: datetime
) -> None:
    """Raise InvalidRequest naming the field when a grant's input is wrong."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_CREDITS:
        raise InvalidRequest(
            f"amount must be a whole number of credits from 1 to {MAX_CREDITS}", param="amount"
        )
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 255:
        raise InvalidRequest("reason must be text of 1 to 255 characters", param="reason")
    if not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest(
            "idempotency_key must be 1 to 200 printable characters without spaces",
            param="idempotency_key",
        )
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise InvalidRequest(
                "expires_at must be an ISO 8601 time with a time zone", param="expires_at"
            )
        if expires_at <= now:
            raise InvalidRequest("expires_at must be in the future", param="expires_at")


def grant_credits(
    *,
    db: Database,
    clock: Clock,
    customer_id: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: str,
    expires_at: datetime | None = None,
) -> GrantResult:
    """Grant credits to a customer (support, promotion), once per idempotency key."""
    now = clock.now()
    check_grant(
        amount=amount,
        reason=reason,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        now=now,
    )
    with db.write_connection() as connection:
        _require_customer(connection, customer_id)
        transaction_id, created = grant_credits_in(
            connection,
            customer_id=customer_id,
            credits=amount,
            reason=reason.strip(),
            key=f"grant:{idempotency_key}",
            actor=actor,
            now=now,
            expires_at=expires_at,
        )
        entry = _entries(connection, customer_id, transaction_ids=[transaction_id])[0]
    return GrantResult(entry, created)


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
    for table in (CREDIT_ENTRIES, CREDIT_LOTS, CREDIT_TRANSACTIONS, CREDIT_ACCOUNTS):
        connection.execute(table.delete().where(table.c.customer_id == customer_id))


def set_credit_allowance(*, db: Database, clock: Clock, customer_id: str, allowance: Any) -> int:
    """Set how far below zero the customer's credits may go; returns the allowance."""
    if (
        isinstance(allowance, bool)
        or not isinstance(allowance, int)
        or not 0 <= allowance <= MAX_CREDITS
    ):
        raise InvalidRequest(
            f"allowance must be a whole number of credits from 0 to {MAX_CREDITS}",
            param="allowance",
        )
    now = clock.now()
    with db.write_connection() as connection:
        _require_customer(connection, customer_id)
        _lock_wallet(connection, customer_id, now)
        connection.execute(
            update(CREDIT_ACCOUNTS)
            .where(
                CREDIT_ACCOUNTS.c.customer_id == customer_id, CREDIT_ACCOUNTS.c.account == WALLET
            )
            .values(allowance=allowance, updated_at=now)
        )
        note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return allowance


# -- reading ----------------------------------------------------------------------------------


def list_credits(*, db: Database, customer_id: str, limit: int = 100) -> CreditsView:
    """Return the customer's balance and its newest credits transactions."""
    with db.transaction() as session:
        connection = session.connection()
        _require_customer(connection, customer_id)
        position = credit_position(connection, customer_id)
        entries = _entries(connection, customer_id, limit=limit)
    return CreditsView(customer_id, position.balance, position.allowance, entries)


def _entries(
    connection: Connection,
    customer_id: str,
    *,
    transaction_ids: Iterable[int] | None = None,
    limit: int = 100,
) -> list[CreditEntryView]:
    query = select(CREDIT_TRANSACTIONS).where(CREDIT_TRANSACTIONS.c.customer_id == customer_id)
    if transaction_ids is not None:
        query = query.where(CREDIT_TRANSACTIONS.c.id.in_(list(transaction_ids)))
    rows = connection.execute(query.order_by(CREDIT_TRANSACTIONS.c.id.desc()).limit(limit)).all()
    ids = [row.id for row in rows]
    wallet = dict(
        connection.execute(
            select(CREDIT_ENTRIES.c.transaction_id, func.sum(CREDIT_ENTRIES.c.amount))
            .where(CREDIT_ENTRIES.c.transaction_id.in_(ids), CREDIT_ENTRIES.c.account == WALLET)
            .group_by(CREDIT_ENTRIES.c.transaction_id)
        ).all()
    )
    lots = {
        row.transaction_id: row
        for row in connection.execute(
            select(
                CREDIT_LOTS.c.transaction_id, CREDIT_LOTS.c.expires_at, CREDIT_LOTS.c.remaining
            ).where(CREDIT_LOTS.c.transaction_id.in_(ids))
        )
    }
    return [
        CreditEntryView(
            id=int(row.id),
            kind=row.kind,
            amount=int(wallet.get(row.id, 0)),
            reason=row.reason,
            idempotency_key=row.idempotency_key,
            actor=row.actor,
            created=row.created_at,
            expires_at=lots[row.id].expires_at if row.id in lots else None,
            remaining=int(lots[row.id].remaining) if row.id in lots else None,
        )
        for row in rows
    ]


def _require_customer(connection: Connection, customer_id: str) -> None:
    deleted = connection.execute(
        select(CUSTOMERS.c.deleted).where(CUSTOMERS.c.id == customer_id)
    ).first()
    if deleted is None or deleted[0]:
        raise NotFound(f"no customer {customer_id!r}", param="id")


# -- expiry -----------------------------------------------------------------------------------


def expire_credits(*, db: Database, clock: Clock, limit: int = 500) -> int:
    """Write off the credits of lots past their expiry, by an entry each; returns how many."""
    now = clock.now()
    with db.transaction() as session:
        customers = list(
            session.connection()
            .execute(
                select(CREDIT_LOTS.c.customer_id)
                .where(CREDIT_LOTS.c.remaining > 0, CREDIT_LOTS.c.expires_at <= now)
                .group_by(CREDIT_LOTS.c.customer_id)
                .order_by(CREDIT_LOTS.c.customer_id)
                .limit(limit)
            )
            .scalars()
        )
    expired = 0
    for customer_id in customers:
        with db.write_connection() as connection:
            _lock_wallet(connection, customer_id, now)
            lots = _open_lots(connection, customer_id)
            due = [lot for lot in lots if lot.expired(now)]
            if not due:
                continue
            _expire_due(connection, customer_id, due, now)
            note_customer_changes(connection, [customer_id], reason="credits", now=now)
            expired += len(due)
    return expired


# -- plan credits -----------------------------------------------------------------------------


def grant_plan_credits(*, db: Database, catalog: Catalog, clock: Clock) -> int:
    """Grant each live subscription its plan's `on_start_credits` for the current period, once.

    Keyed by subscription and period start, so a rerun (or a replica) grants nothing twice.
    The credits expire when the period ends.
    """
    now = clock.now()
    plans = {plan.id: plan.on_start_credits for plan in catalog.plans.values()}
    credited = sorted(plan_id for plan_id, credits in plans.items() if credits > 0)
    if not credited:
        return 0
    with db.transaction() as session:
        subscriptions = (
            session.connection()
            .execute(
                select(
                    SUBSCRIPTIONS.c.id,
                    SUBSCRIPTIONS.c.customer_id,
                    SUBSCRIPTIONS.c.plan,
                    SUBSCRIPTIONS.c.current_period_start,
                    SUBSCRIPTIONS.c.current_period_end,
                ).where(
                    SUBSCRIPTIONS.c.plan.in_(credited),
                    SUBSCRIPTIONS.c.status.in_(LIVE_STATUSES),
                    SUBSCRIPTIONS.c.current_period_start.is_not(None),
                    SUBSCRIPTIONS.c.current_period_start <= now,
                )
            )
            .all()
        )
        wanted = {_plan_key(row.id, row.current_period_start): row for row in subscriptions}
        done = set(
            session.connection()
            .execute(
                select(CREDIT_TRANSACTIONS.c.idempotency_key).where(
                    CREDIT_TRANSACTIONS.c.idempotency_key.in_(sorted(wanted))
                )
            )
            .scalars()
        )
    granted = 0
    for key, row in sorted(wanted.items()):
        if key in done:
            continue
        with db.write_connection() as connection:
            _, created = grant_plan_credits_for_period(
                connection,
                customer_id=row.customer_id,
                subscription_id=row.id,
                plan=row.plan,
                credits=plans[row.plan],
                period_start=row.current_period_start,
                period_end=row.current_period_end,
                now=now,
            )
        granted += int(created)
    return granted


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
        key=_plan_key(subscription_id, period_start),
        actor="system",
        now=now,
        expires_at=period_end if period_end is not None and period_end > now else None,
    )


def _plan_key(subscription_id: str, period_start: datetime) -> str:
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
        charges = connection.execute(
            select(CHARGES.c.id).where(CHARGES.c.payment_intent == str(payment_intent))
        ).scalars()
        for charge_id in list(charges):
            claw_back_refunds(connection, charge_id=charge_id, now=now, actor=actor)
    return True


def claw_back_refunds(connection: Connection, *, charge_id: str, now: datetime, actor: str) -> int:
    """Take back purchased credits in proportion to each refund of the charge, once per refund.

    Reads the charge and refunds the handler mirrored; returns the credits taken back now.
    """
    charge = connection.execute(select(CHARGES).where(CHARGES.c.id == charge_id)).mappings().first()
    if charge is None or not charge["payment_intent"] or charge["amount"] <= 0:
        return 0
    lot = (
        connection.execute(
            select(CREDIT_LOTS.c.id, CREDIT_LOTS.c.customer_id, CREDIT_LOTS.c.credits)
            .where(CREDIT_LOTS.c.payment_intent == charge["payment_intent"])
            .order_by(CREDIT_LOTS.c.id)
        )
        .mappings()
        .first()
    )
    if lot is None:
        return 0
    customer_id = lot["customer_id"]
    _lock_wallet(connection, customer_id, now)
    refunds = connection.execute(
        select(REFUNDS.c.id, REFUNDS.c.amount)
        .where(REFUNDS.c.charge_id == charge_id, REFUNDS.c.status.in_(("succeeded", "pending")))
        .order_by(REFUNDS.c.id)
    ).all()
    keys = {f"refund:{refund.id}": refund for refund in refunds}
    done = set(
        connection.execute(
            select(CREDIT_TRANSACTIONS.c.idempotency_key).where(
                CREDIT_TRANSACTIONS.c.customer_id == customer_id,
                CREDIT_TRANSACTIONS.c.idempotency_key.in_(sorted(keys)),
            )
        ).scalars()
    )
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
        lots = _expire_due(connection, customer_id, _open_lots(connection, customer_id), now)
        movement = (
            debit(lots, credits, PURCHASES, now, first=int(lot["id"])) if credits else Movement(())
        )
        _record(
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


# -- overdraft invoicing ----------------------------------------------------------------------


@dataclass(frozen=True)
class OverdraftInvoice:
    """An overdraft invoiced in Stripe for one customer and range."""

    customer_id: str
    range: str
    credits: int
    invoice_id: str


def overdraft_due(
    *, db: Database, settings: Settings, now: datetime
) -> tuple[str, list[tuple[str, str, int]]] | None:
    """Return the range to invoice now and (customer, Stripe customer, credits) owed for it."""
    period = overdraft_range(
        now,
        invoice_day=settings.credit_overdraft_invoice_day,
        shift=settings.credit_overdraft_invoice_range_shift,
    )
    if period is None:
        return None
    key = f"overdraft:{period.key}"
    owed: list[tuple[str, str, int]] = []
    with db.transaction() as session:
        connection = session.connection()
        rows = connection.execute(
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
        ).all()
        for row in rows:
            if _find(connection, row.customer_id, key) is not None:
                continue
            balance_at_end = connection.execute(
                select(func.coalesce(func.sum(CREDIT_ENTRIES.c.amount), 0)).where(
                    CREDIT_ENTRIES.c.customer_id == row.customer_id,
                    CREDIT_ENTRIES.c.account == WALLET,
                    CREDIT_ENTRIES.c.created_at < period.end,
                )
            ).scalar_one()
            credits = overdraft_to_invoice(
                balance_at_end=int(balance_at_end), balance_now=int(row.balance)
            )
            if credits > 0:
                owed.append((row.customer_id, row.stripe_customer_id, credits))
    return period.key, owed


def settle_invoiced_overdraft(
    *,
    db: Database,
    customer_id: str,
    range_key: str,
    credits: int,
    invoice_id: str,
    now: datetime,
) -> bool:
    """Record the invoiced overdraft as paid into the wallet, once per range; False if done."""
    with db.write_connection() as connection:
        key = f"overdraft:{range_key}"
        if _find(connection, customer_id, key) is not None:
            return False
        position = _lock_wallet(connection, customer_id, now)
        # Credits that came in since the invoice was made may have repaid part of the debt: what
        # the invoice paid beyond it stays in the wallet as a lot of its own.
        _record(
            connection,
            customer_id=customer_id,
            kind=OVERDRAFT_INVOICE,
            amount=credits,
            reason=f"overdraft of {range_key} invoiced ({invoice_id})",
            key=key,
            actor="system",
            now=now,
            movement=credit_in(position.balance, credits, OVERDRAFT),
            lot=_NewLot(OVERDRAFT),
        )
        note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return True


# -- the ledger's own check (reconciliation) ----------------------------------------------------


def ledger_problems(connection: Connection) -> list[str]:
    """Return every account whose balance is not the sum of its entries, and unbalanced books."""
    balances = {
        (row.customer_id, row.account): int(row.balance)
        for row in connection.execute(
            select(
                CREDIT_ACCOUNTS.c.customer_id, CREDIT_ACCOUNTS.c.account, CREDIT_ACCOUNTS.c.balance
            )
        )
    }
    sums = {
        (row.customer_id, row.account): int(row.total)
        for row in connection.execute(
            select(
                CREDIT_ENTRIES.c.customer_id,
                CREDIT_ENTRIES.c.account,
                func.sum(CREDIT_ENTRIES.c.amount).label("total"),
            ).group_by(CREDIT_ENTRIES.c.customer_id, CREDIT_ENTRIES.c.account)
        )
    }
    problems = ledger_differences(balances, sums)
    lots = dict(
        connection.execute(
            select(CREDIT_LOTS.c.customer_id, func.sum(CREDIT_LOTS.c.remaining)).group_by(
                CREDIT_LOTS.c.customer_id
            )
        ).all()
    )
    for (customer_id, account), balance in sorted(balances.items()):
        held = int(lots.get(customer_id) or 0)
        if account == WALLET and held != max(0, balance):
            problems.append(
                f"credits of customer {customer_id!r}: lots hold {held} "
                f"but the wallet's balance is {balance}"
            )
    return problems


# -- buying a pack ------------------------------------------------------------------------------


def start_credit_checkout(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway | None,
    customer_id: str,
    pack: str,
    success_url: str,
    cancel_url: str,
    idempotency_key: str | None = None,
) -> CheckoutSession:
    """Open a payment-mode Checkout Session for a credit pack in the customer's currency.

    The credits are granted when Stripe reports the session completed and paid.
    """
    # Imported here: creating a customer grants its onboarding credits through this module.
    from tollgate.services.customers import (
        check_url,
        customer_view,
        load_customer,
        stripe_customer,
    )

    chosen = catalog.credit_packs.get(pack) if isinstance(pack, str) else None
    if chosen is None:
        raise NotFound(
            f"unknown credit pack {pack!r} "
            f"(packs are: {', '.join(sorted(catalog.credit_packs)) or 'none'})",
            param="pack",
        )
    check_url(success_url, "success_url")
    check_url(cancel_url, "cancel_url")
    with db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, account = stripe_customer(row, gateway)
        currency = customer_view(session, row, catalog).currency
    price = chosen.price_in(currency)
    if price is None:
        raise InvalidRequest(
            f"credit pack {chosen.id!r} has no price in {currency}, the customer's currency "
            f"(it is priced in {', '.join(p.currency for p in chosen.prices)})",
            param="pack",
        )
    assert gateway is not None
    target = gateway.for_account(account) if account else gateway
    asked = {"pack": chosen.id, "success_url": success_url, "cancel_url": cancel_url}
    session_id, url = target.open_credit_checkout_session(
        idempotency_key=f"credits-checkout-{customer_id}-{request_id(idempotency_key, asked)}",
        stripe_customer_id=stripe_id,
        price_lookup_key=pack_price_lookup_key(chosen.id, currency),
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=customer_id,
        metadata={
            "tollgate_customer_id": customer_id,
            "tollgate_pack": chosen.id,
            "tollgate_credits": str(chosen.credits),
        },
    )
    return CheckoutSession(session_id, url)


# -- invoicing the overdraft -------------------------------------------------------------------


def invoice_overdrafts(
    *,
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    settings: Settings,
    clock: Clock,
) -> list[OverdraftInvoice]:
    """Invoice each customer's credit overdraft for the range due, once per range.

    Stripe's objects are keyed by customer and range, so a run that stops between Stripe and
    the ledger makes the same invoice again, never a second one.
    """
    product = catalog.credit_overdraft_product
    if product is None:
        return []
    now = clock.now()
    due = overdraft_due(db=db, settings=settings, now=now)
    if due is None:
        return []
    range_key, owed = due
    price = product.prices[0]
    invoiced = []
    for customer_id, stripe_customer_id, credits in owed:
        key = f"overdraft-{customer_id}-{range_key}"
        invoice_id = gateway.invoice_credit_overdraft(
            idempotency_key=key,
            stripe_customer_id=stripe_customer_id,
            price_lookup_key=overdraft_price_lookup_key(price.currency),
            credits=credits,
            description=f"{product.name}: {credits} credits overdrawn ({range_key})",
            metadata={
                "tollgate_customer_id": customer_id,
                "tollgate_credit_overdraft": range_key,
            },
        )
        settle_invoiced_overdraft(
            db=db,
            customer_id=customer_id,
            range_key=range_key,
            credits=credits,
            invoice_id=invoice_id,
            now=now,
        )
        invoiced.append(OverdraftInvoice(customer_id, range_key, credits, invoice_id))
    return invoiced
