"""The change feed: every change to what a customer may do, written with the change itself.

A cached entitlement decision is stale once its customer appears in the feed after it was made.
Writers call `note_customer_changes` inside the transaction that makes the change; the ORM's
`state_version` bumps are noted by a flush hook, so no service can change access and forget.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    event,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import Session

from tollgate.db.models import Customer, CustomerChange
from tollgate.db.tables import CUSTOMER_CHANGES, CUSTOMERS

_BUMP = (
    update(CUSTOMERS)
    .where(CUSTOMERS.c.id == bindparam("row_id"))
    .values(state_version=CUSTOMERS.c.state_version + 1)
)


def note_customer_changes(
    connection: Connection, customer_ids: Iterable[str], *, reason: str, now: datetime
) -> None:
    """Mark the customers' cached decisions stale: bump `state_version`, append to the feed."""
    ids = sorted(set(customer_ids))  # one lock order for every writer
    if not ids:
        return
    connection.execute(_BUMP, [{"row_id": customer_id} for customer_id in ids])
    connection.execute(insert(CUSTOMER_CHANGES), feed_rows(ids, reason=reason, now=now))


def feed_rows(customer_ids: Iterable[str], *, reason: str, now: datetime) -> list[dict[str, Any]]:
    """Return the feed rows for customers that changed (for callers batching their writes)."""
    return [{"customer_id": cid, "reason": reason, "at": now} for cid in customer_ids]


def changes_after(
    connection: Connection, seq: int, *, limit: int = 10_000
) -> list[tuple[int, str, str]]:
    """Return `(seq, customer_id, reason)` of the changes after `seq`, oldest first."""
    rows = connection.execute(
        select(CUSTOMER_CHANGES.c.seq, CUSTOMER_CHANGES.c.customer_id, CUSTOMER_CHANGES.c.reason)
        .where(CUSTOMER_CHANGES.c.seq > seq)
        .order_by(CUSTOMER_CHANGES.c.seq)
        .limit(limit)
    )
    return [(row.seq, row.customer_id, row.reason) for row in rows]


def last_change(connection: Connection) -> int:
    """Return the newest change's sequence number (0 for an empty feed)."""
    return int(
        connection.execute(
            select(CUSTOMER_CHANGES.c.seq).order_by(CUSTOMER_CHANGES.c.seq.desc()).limit(1)
        ).scalar()
        or 0
    )


def prune_changes(connection: Connection, *, keep: int = 100_000) -> int:
    """Delete all but the newest `keep` feed rows; returns how many went."""
    newest = last_change(connection)
    result = connection.execute(
        delete(CUSTOMER_CHANGES).where(CUSTOMER_CHANGES.c.seq <= newest - keep)
    )
    return int(result.rowcount or 0)


@event.listens_for(Session, "before_flush")
def _note_orm_bumps(session: Session, _context: Any, _instances: Any) -> None:
    # Services that change a customer through the ORM bump `state_version`; note each in the feed.
    for obj in session.dirty:
        if isinstance(obj, Customer) and inspect(obj).attrs.state_version.history.has_changes():
            # `at` is informational (pruning goes by sequence), so the wall clock will do here.
            session.add(CustomerChange(customer_id=obj.id, reason="customer", at=datetime.now(UTC)))
