"""The change feed: every change to what a customer may do, written with the change itself.

A cached entitlement decision is stale once its customer appears in the feed after it was made.
Writers note changes inside the transaction that makes them (`note_customer_changes`, or
`feed_rows` for writers batching their statements), which also bumps the customers'
`state_version`; servers and clients read the feed to drop cached decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from tollgate.db.tables import CUSTOMER_CHANGES, CUSTOMERS

_BUMP = (
    update(CUSTOMERS)
    .where(CUSTOMERS.c.id == bindparam("row_id"))
    .values(state_version=CUSTOMERS.c.state_version + 1)
)
# Plain driver SQL, in each driver's parameter style: servers read this every few milliseconds.
_SEEN_SINCE = {
    dialect: f"SELECT seq, customer_id FROM customer_changes WHERE seq > {after} ORDER BY seq"  # noqa: S608 (a placeholder)
    for dialect, after in (("sqlite", ":after"), ("postgresql", "%(after)s"))
}


def note_customer_changes(
    connection: Connection, customer_ids: Iterable[str], *, reason: str, now: datetime
) -> None:
    """Mark the customers' cached decisions stale: bump `state_version`, append to the feed.

    `reason`: subscription | plan | usage | threshold | credits | dunning | customer.
    """
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


def customers_changed_after(connection: Connection, seq: int) -> list[tuple[int, str]]:
    """Return `(seq, customer_id)` of every change after `seq`, oldest first (the fast read)."""
    sql = _SEEN_SINCE[connection.dialect.name]
    return [
        (int(seq), str(customer))
        for seq, customer in connection.exec_driver_sql(sql, {"after": seq})
    ]


def last_change(connection: Connection) -> int:
    """Return the newest change's sequence number (0 for an empty feed)."""
    newest = select(CUSTOMER_CHANGES.c.seq).order_by(CUSTOMER_CHANGES.c.seq.desc()).limit(1)
    return int(connection.execute(newest).scalar() or 0)


def prune_changes(connection: Connection, *, keep: int = 100_000) -> int:
    """Delete all but the newest `keep` feed rows; returns how many went."""
    newest = last_change(connection)
    result = connection.execute(
        delete(CUSTOMER_CHANGES).where(CUSTOMER_CHANGES.c.seq <= newest - keep)
    )
    return int(result.rowcount or 0)
