"""How a handler applies an event to the mirror: behind the object's watermark, audited.

The steps every handler shares (see .handlers and .payment_handlers): settle an event against
the stored row's watermark (tollgate.domain.events.decide), asking Stripe when the two are of
the same second and disagree; write a mirror row and audit what changed; lock the customer an
event concerns, making its row from Stripe's copy the first time it is seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table

from tollgate.db.queries import mirror
from tollgate.db.queries.mirror import Row
from tollgate.db.tables import CUSTOMERS
from tollgate.domain.events import CustomerSnapshot, Decision, changed_fields, decide
from tollgate.services.webhooks.context import HandlerContext, UnknownStripeObject
from tollgate.stripe.translate import customer_snapshot


def row_values(row: Row, keys: Iterable[str]) -> dict[str, Any]:
    """Return the stored row's values of `keys`, to compare with the event's."""
    return {key: row[key] for key in keys}


SKIP: Any = object()
"""What `settle` answers when the event is behind the stored row: change nothing."""


def settle(
    ctx: HandlerContext,
    row: Row | None,
    differs: bool,
    progress: int,
    object_type: str,
    object_id: str,
) -> Any:
    """Return SKIP, None (apply the event's snapshot) or the object as Stripe has it now.

    The stored row's watermark decides (tollgate.domain.events.decide); when the event and the
    row are of the same second and disagree, Stripe is asked, and an object Stripe no longer
    has is skipped.
    """
    if row is None:
        return None
    decision = _watermark_decision(ctx, row, differs, progress)
    if decision is Decision.SKIP:
        return SKIP
    if decision is Decision.REFETCH:
        row_event = str(row["watermark_event_id"] or "")
        return ctx.fetch_current(object_type, object_id, "same_second", row_event) or SKIP
    return None


def same_second(ctx: HandlerContext, row: Row) -> bool:
    """Whether the event is of the stored row's second: only then does `settle` weigh the two
    snapshots' progress (see tollgate.domain.events.decide), which is worked out only then."""
    return bool(row["watermark_created"] == ctx.created)


def settle_without_fetch(ctx: HandlerContext, row: Row, differs: bool, progress: int) -> bool:
    """Return whether the stored row wins over the event (for objects not fetched by id)."""
    decision = _watermark_decision(ctx, row, differs, progress)
    if decision is Decision.REFETCH:
        return ctx.event_id < str(row["watermark_event_id"] or "")
    return decision is Decision.SKIP


def _watermark_decision(ctx: HandlerContext, row: Row, differs: bool, progress: int) -> Decision:
    """Decide by the stored row's watermark what the event's snapshot does to it."""
    return decide(
        stored_created=row["watermark_created"],
        stored_event_id=row["watermark_event_id"],
        incoming_created=ctx.created,
        incoming_event_id=ctx.event_id,
        differs=differs,
        progress=progress,
    )


def changed_keys(row: Row, values: Mapping[str, Any]) -> list[str]:
    """Return the keys of `values` whose value differs from the stored row's."""
    return [key for key, value in values.items() if row[key] != value]


def write_row(
    ctx: HandlerContext,
    table: Table,
    object_type: str,
    object_id: str,
    row: Row | None,
    values: dict[str, Any],
    customer_id: str | None,
    *,
    audited: dict[str, Any] | None = None,
    before_extra: dict[str, Any] | None = None,
    action: str | None = None,
    changed: list[str] | None = None,
) -> dict[str, Any]:
    """Insert or update a watermarked mirror row, audit what changed; return the row as written.

    `audited` holds what the audit records besides the columns (not columns themselves), and
    `before_extra` the same keys' values before. `changed`, when the caller compared already,
    is `changed_keys(row, values)`.
    """
    watermark = ctx.watermark()
    if row is None:
        written = {**values, **watermark, "id": object_id, "created_at": ctx.now}
        ctx.write(mirror.insert_row(table), {**written, "updated_at": ctx.now})
        after = {**values, **audited} if audited else dict(values)
        ctx.audit_changes(object_type, object_id, action or "created", None, after, customer_id)
        return written
    # The row and the values are compared once: what changed is what is written (fewer values
    # to convert and send, the same row in the end) and what the audit records.
    if changed is None:
        changed = changed_keys(row, values)
    new = {key: values[key] for key in changed}
    old = {key: row[key] for key in changed}
    update = {**new, **watermark}
    if audited:
        extra_old, extra_new = changed_fields(before_extra or {}, audited)
        old.update(extra_old)
        new.update(extra_new)
    if new:
        update["updated_at"] = ctx.now
    ctx.write(mirror.update_by_id(table), {**update, "row_id": object_id})
    ctx.audit_changes(object_type, object_id, action or "updated", old, new, customer_id)
    return {**row, **values, **update}


# -- the customer an event concerns -----------------------------------------------------------


def customer_values(snapshot: CustomerSnapshot, account: str | None) -> dict[str, Any]:
    """Return the mirror's columns of a Stripe customer (on `account`, None for the platform)."""
    return {
        "email": snapshot.email,
        "name": snapshot.name,
        "currency": snapshot.currency,
        "metadata": dict(snapshot.metadata),
        "deleted": snapshot.deleted,
        "stripe_account": account,
        "address": dict(snapshot.address) if snapshot.address else None,
        "tax_exempt": snapshot.tax_exempt,
    }


def new_customer(
    ctx: HandlerContext, snapshot: CustomerSnapshot, app_id_hint: str | None = None
) -> Row:
    """Create the mirror row of a customer seen for the first time, under the app's id."""
    app_id = snapshot.app_id if snapshot.app_id != snapshot.stripe_id else app_id_hint
    row = None
    if app_id:
        # The app may have made the customer (e.g. offline) before Stripe had it.
        row = ctx.row(CUSTOMERS, app_id, lock=True)
        if row is not None and row["stripe_customer_id"] not in (None, snapshot.stripe_id):
            row, app_id = None, None  # that id is another Stripe customer's: use the cus_ id
        elif not _stamped_by_tollgate(row, ctx.account):
            row, app_id = None, None  # a tenant's claim, not Tollgate's stamp: the cus_ id
    values = customer_values(snapshot, ctx.account)
    linked = {
        **values,
        "stripe_customer_id": snapshot.stripe_id,
        **ctx.watermark(),
    }
    if row is not None:
        before = {**row_values(row, values), "stripe_customer_id": row["stripe_customer_id"]}
        ctx.write(mirror.update_by_id(CUSTOMERS), {**linked, "row_id": row["id"]})
        after = {**values, "stripe_customer_id": snapshot.stripe_id}
        ctx.audit("customer", row["id"], "linked", before, after, row["id"])
        return {**row, **linked}
    created = {
        **linked,
        "id": app_id or snapshot.stripe_id,
        "offline": False,
        "state_version": 0,
        "created_at": ctx.now,
        "updated_at": ctx.now,
    }
    ctx.write(mirror.insert_row(CUSTOMERS), created)
    after = {**values, "stripe_customer_id": snapshot.stripe_id}
    ctx.audit("customer", created["id"], "created", None, after, created["id"])
    return created


def _stamped_by_tollgate(row: Row | None, account: str | None) -> bool:
    """Whether an app id a Stripe customer names (metadata, client_reference_id) is to be trusted.

    On the platform, Tollgate stamps it on the customers it makes, and the platform's Stripe
    account is the operator's own. A connected account is a tenant's: anyone with access to it
    can write any metadata. Its claim is trusted only for a customer the app created on that
    very account (the row exists, attached to it by the operator's app); otherwise the customer
    is mirrored under its `cus_` id, and cannot take an id the app may create later.
    """
    if account is None:
        return True
    return row is not None and row["stripe_account"] == account


def lock_customer(
    ctx: HandlerContext, stripe_customer_id: str, *, app_id_hint: str | None = None
) -> str:
    """Lock the customer's row and return its id; create it from Stripe's copy if first seen."""
    locked = ctx.rows(mirror.LOCK_CUSTOMER, stripe_customer_id=stripe_customer_id)
    if locked:
        return str(locked[0]["id"])
    return first_seen_customer(ctx, stripe_customer_id, app_id_hint)


def first_seen_customer(
    ctx: HandlerContext, stripe_customer_id: str, app_id_hint: str | None = None
) -> str:
    """Create the mirror row of a customer the mirror lacks, from Stripe's copy; return its id."""
    found = ctx.fetch("customer", stripe_customer_id, "first_seen")
    if not found:
        raise UnknownStripeObject(
            f"customer {stripe_customer_id} is not in Stripe"
            + (f" account {ctx.account}" if ctx.account else "")
        )
    return str(new_customer(ctx, customer_snapshot(found), app_id_hint)["id"])


def lock_customer_and_read(
    ctx: HandlerContext, stripe_customer_id: str, table: Table, row_id: str
) -> tuple[str, Row | None]:
    """Lock the customer (made from Stripe's copy if first seen), then read the object's row."""
    statement = mirror.row_by_id(table, lock=True)
    customer_id, rows = mirror.lock_customer_and_read(
        ctx.read, stripe_customer_id, statement, row_id
    )
    if customer_id is None:
        # First seen: made now, so the object is read again behind its lock.
        customer_id = first_seen_customer(ctx, stripe_customer_id)
        rows = ctx.rows(statement, row_id=row_id)
    return customer_id, rows[0] if rows else None
