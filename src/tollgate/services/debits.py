"""Bank debits and disputes (issue 21): what a customer has while Stripe has not confirmed the
money, or while a dispute takes it back.

A debit is `processing` for days (Stripe: about 4 business days). Its invoice stays open and is
never marked paid until `invoice.paid`; meanwhile `TOLLGATE_PROCESSING_ACCESS` (carried by the
dunning policy the webhook handlers have) says what a subscription waiting on its first debit
gives: `keep`, its plan at once; `wait`, nothing until paid. A returned debit fails the invoice
like a declined card, so the dunning path applies unchanged. The same setting says what a
subscription paid by bank transfer gives until its first invoice's money arrives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from tollgate.db.queries import billing
from tollgate.db.queries.changes import note_customer_changes
from tollgate.domain.dunning import DunningPolicy
from tollgate.domain.entitlements import AWAITING_TRANSFER


def debit_started(
    connection: Connection, *, policy: DunningPolicy, customer_id: str, now: datetime
) -> None:
    """A debit of the customer is processing: hold access as the setting says."""
    access = "full" if policy.processing_access == "keep" else "default"
    if billing.set_processing_access(connection, customer_id, access, now):
        note_customer_changes(connection, [customer_id], reason="subscription", now=now)


def debit_settled(connection: Connection, *, customer_id: str, now: datetime) -> None:
    """A debit settled (paid or returned): once none is processing, access follows Stripe."""
    if billing.pending_charge_count(connection, customer_id):
        return
    if billing.set_processing_access(connection, customer_id, None, now):
        note_customer_changes(connection, [customer_id], reason="subscription", now=now)


def first_transfer_changed(
    connection: Connection,
    *,
    policy: DunningPolicy,
    customer_id: str,
    waiting: bool,
    now: datetime,
) -> None:
    """The first invoice of a subscription paid by bank transfer is open (`waiting`) or settled.

    Stripe makes such a subscription active at once (its invoice is sent, due in days): with
    `keep` the plan is the customer's at once; with `wait`, only once the invoice is paid.
    """
    held = waiting and policy.processing_access == "wait"
    if billing.set_processing_access(
        connection, customer_id, AWAITING_TRANSFER if held else None, now
    ):
        note_customer_changes(connection, [customer_id], reason="subscription", now=now)


def dispute_changed(
    connection: Connection, *, policy: DunningPolicy, customer_id: str, now: datetime
) -> None:
    """A dispute of the customer changed: with TOLLGATE_DISPUTE_ACCESS=reduce, reduced access
    while any of its disputes is open or lost; full again once none is (won, or inquiries)."""
    held = policy.dispute_access == "reduce" and billing.held_dispute_count(connection, customer_id)
    if billing.set_dispute_access(connection, customer_id, "reduced" if held else None, now):
        note_customer_changes(connection, [customer_id], reason="subscription", now=now)
