"""The audit log of changes made through Tollgate (an operator's, the API's, a customer's on its
page), as opposed to a Stripe event's."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from tollgate.db.dialects import insert_if_new
from tollgate.db.tables import AUDIT_LOG


def record_audit(
    connection: Connection,
    *,
    actor: str,
    object_type: str,
    object_id: str,
    action: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: datetime,
    once: str | None = None,
) -> None:
    """Append one row to the audit log (an operator's change, not a Stripe event's).

    With `once` (the request's key, as its Stripe write carries it), a row only if no row has
    that key yet: the same request repeated, at once or after, is audited once.
    """
    row = {
        "at": now,
        "actor": actor,
        "object_type": object_type,
        "object_id": object_id,
        "action": action[:32],  # the column's width: a long console action name is cut
        "before": dict(before) if before is not None else None,
        "after": dict(after) if after is not None else None,
        "event_id": None,
        "request_key": once,
    }
    # Without `once` the key is NULL, which never conflicts: always a row.
    connection.execute(insert_if_new(connection, AUDIT_LOG, index_elements=("request_key",)), row)


def audit_recorded(
    connection: Connection, *, object_type: str, object_id: str, action: str
) -> bool:
    """Whether the audit log already holds `action` on the object (a repeated request's)."""
    found = connection.execute(
        select(AUDIT_LOG.c.id)
        .where(AUDIT_LOG.c.object_type == object_type)
        .where(AUDIT_LOG.c.object_id == object_id)
        .where(AUDIT_LOG.c.action == action)
        .limit(1)
    ).first()
    return found is not None
