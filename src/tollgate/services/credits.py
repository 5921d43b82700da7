"""Credits: grants, purchases, expiry and overdraft invoicing, as use cases over the ledger.

The ledger's steps (opening accounts, burns, grants, clawbacks, the books' check) run in the
caller's transaction and live in tollgate.services.credit_ledger; the use cases here each own
theirs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection

from tollgate.clock import Clock
from tollgate.config import Settings
from tollgate.db.queries import credits as ledger
from tollgate.db.queries.changes import note_customer_changes
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_sync import overdraft_price_lookup_key, pack_price_lookup_key
from tollgate.domain.credits import (
    MAX_CREDITS,
    OVERDRAFT,
    OVERDRAFT_INVOICE,
    credit_in,
    overdraft_range,
    overdraft_to_invoice,
)
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.subscriptions import request_id
from tollgate.services.credit_ledger import (
    NewLot,
    credit_position,
    expire_due,
    grant_credits_in,
    grant_plan_credits_for_period,
    lock_wallet,
    plan_credits_key,
    record,
)
from tollgate.services.customers import check_url, customer_view, load_customer, stripe_customer
from tollgate.services.deps import Deps
from tollgate.stripe.gateway import StripeGateway
from tollgate_client.views import CheckoutSession, CreditEntryView, CreditsView

Due = TypeVar("Due")  # what a due plan grant carries (due_plan_grants)

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
LIVE_STATUSES = ("active", "trialing")


@dataclass(frozen=True)
class GrantResult:
    """A grant, and whether this request made it (False: a repeat of the same request)."""

    entry: CreditEntryView
    created: bool


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
    deps: Deps,
    *,
    customer_id: str,
    amount: int,
    reason: str,
    idempotency_key: str,
    actor: str,
    expires_at: datetime | None = None,
) -> GrantResult:
    """Grant credits to a customer (support, promotion), once per idempotency key."""
    db, clock = deps.db, deps.clock
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


def set_credit_allowance(
    deps: Deps,
    *,
    customer_id: str,
    allowance: Any,
) -> int:
    """Set how far below zero the customer's credits may go; returns the allowance."""
    db, clock = deps.db, deps.clock
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
        lock_wallet(connection, customer_id, now)
        ledger.set_allowance(connection, customer_id, allowance, now)
        note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return allowance


# -- reading ----------------------------------------------------------------------------------


def list_credits(*, db: Database, customer_id: str, limit: int = 100) -> CreditsView:
    """Return the customer's balance and its newest credits transactions."""
    with db.engine.connect() as connection:
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
    rows = ledger.newest_transactions(connection, customer_id, ids=transaction_ids, limit=limit)
    ids = [int(row.id) for row in rows]
    wallet = ledger.wallet_amounts(connection, ids)
    lots = ledger.lots_of(connection, ids)
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
    if ledger.customer_deleted(connection, customer_id) in (None, True):
        raise NotFound(f"no customer {customer_id!r}", param="id")


# -- expiry -----------------------------------------------------------------------------------


def expire_credits(*, db: Database, clock: Clock, limit: int = 500) -> int:
    """Write off the credits of lots past their expiry, by an entry each; returns how many."""
    now = clock.now()
    with db.engine.connect() as connection:
        customers = ledger.customers_with_expired_lots(connection, now, limit)
    expired = 0
    for customer_id in customers:
        with db.write_connection() as connection:
            lock_wallet(connection, customer_id, now)
            due = [lot for lot in ledger.open_lots(connection, customer_id) if lot.expired(now)]
            if not due:
                continue
            expire_due(connection, customer_id, due, now)
            note_customer_changes(connection, [customer_id], reason="credits", now=now)
            expired += len(due)
    return expired


# -- plan credits -----------------------------------------------------------------------------


def due_plan_grants(
    db: Database,
    catalog: Catalog,
    credits: Literal["on_start_credits", "monthly_credits"],
    now: datetime,
    grants_of: Callable[[Any], Iterable[tuple[str, Due]]],
) -> tuple[dict[str, int], dict[str, Due]]:
    """Return the credits each plan grants in its field `credits` (the plans granting any), and
    the grants their live subscriptions are due but were not given yet, by ledger key.

    `grants_of` names a subscription's grants begun by `now` (key and what the grant needs).
    """
    amounts = {plan.id: getattr(plan, credits) for plan in catalog.plans.values()}
    plans = {plan_id: amount for plan_id, amount in amounts.items() if amount > 0}
    if not plans:
        return plans, {}
    with db.engine.connect() as connection:
        subscriptions = ledger.started_subscriptions(connection, sorted(plans), LIVE_STATUSES, now)
        due = {key: grant for row in subscriptions for key, grant in grants_of(row)}
        done = ledger.done_keys(connection, due)
        connection.rollback()
    return plans, {key: grant for key, grant in due.items() if key not in done}


def grant_plan_credits(*, db: Database, catalog: Catalog, clock: Clock) -> int:
    """Grant each live subscription its plan's `on_start_credits` for the current period, once.

    Keyed by subscription and period start, so a rerun (or a replica) grants nothing twice.
    The credits expire when the period ends.
    """
    now = clock.now()
    plans, due = due_plan_grants(db, catalog, "on_start_credits", now, _period_grant)
    granted = 0
    for _, row in sorted(due.items()):
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


def _period_grant(subscription: Any) -> list[tuple[str, Any]]:
    # One grant a period, keyed as grant_plan_credits_for_period keys it.
    return [(plan_credits_key(subscription.id, subscription.current_period_start), subscription)]


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
    with db.engine.connect() as connection:
        for row in ledger.overdrawn_wallets(connection):
            if ledger.transaction_by_key(connection, row.customer_id, key) is not None:
                continue
            credits = overdraft_to_invoice(
                balance_at_end=ledger.wallet_balance_before(
                    connection, row.customer_id, period.end
                ),
                balance_now=int(row.balance),
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
        if ledger.transaction_by_key(connection, customer_id, key) is not None:
            return False
        position = lock_wallet(connection, customer_id, now)
        # Credits that came in since the invoice was made may have repaid part of the debt: what
        # the invoice paid beyond it stays in the wallet as a lot of its own.
        record(
            connection,
            customer_id=customer_id,
            kind=OVERDRAFT_INVOICE,
            amount=credits,
            reason=f"overdraft of {range_key} invoiced ({invoice_id})",
            key=key,
            actor="system",
            now=now,
            movement=credit_in(position.balance, credits, OVERDRAFT),
            lot=NewLot(OVERDRAFT),
        )
        note_customer_changes(connection, [customer_id], reason="credits", now=now)
    return True


# -- buying a pack ------------------------------------------------------------------------------


def start_credit_checkout(
    deps: Deps,
    *,
    customer_id: str,
    pack: str,
    success_url: str,
    cancel_url: str,
    idempotency_key: str | None = None,
) -> CheckoutSession:
    """Open a payment-mode Checkout Session for a credit pack in the customer's currency.

    The credits are granted when Stripe reports the session completed and paid.
    """
    db, catalog, gateway = deps.db, deps.catalog, deps.optional_stripe()
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
        stripe_id, target = stripe_customer(row, gateway)
        currency = customer_view(session, row, catalog).currency
    price = chosen.price_in(currency)
    if price is None:
        raise InvalidRequest(
            f"credit pack {chosen.id!r} has no price in {currency}, the customer's currency "
            f"(it is priced in {', '.join(p.currency for p in chosen.prices)})",
            param="pack",
        )
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
