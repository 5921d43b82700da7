"""Dunning: a failed invoice payment sends the policy's email and holds back access.

The policy comes from the settings (`TOLLGATE_DUNNING_POLICY`); whoever applies Stripe's events
passes it in (the webhook handlers find it on their context).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from tollgate.db.queries import billing
from tollgate.db.queries.changes import note_customer_changes
from tollgate.domain.dunning import Access, DunningPolicy, access_after_failure
from tollgate.services.outbox import queue_app_event, queue_email


def dunning_access(connection: Connection, customer_id: str) -> Access | None:
    """Return the customer's dunning access (None: access follows the subscription)."""
    access: Access | None = billing.dunning_access(connection, customer_id)
    return access


def record_failed_attempt(
    connection: Connection,
    *,
    policy: DunningPolicy,
    customer_id: str,
    invoice: dict[str, Any],
    attempt_count: int,
    cause: str,
    now: datetime,
) -> None:
    """Send the email for the failed `attempt_count` and hold access back as the policy says.

    `invoice` holds the facts the email shows; `attempt_count` for access is the highest the
    mirror has seen, so a late event for an earlier attempt changes nothing.
    """
    step = policy.step_for(int(invoice["attempt_count"]))
    if step is not None:
        queue_email(
            connection,
            customer_id=customer_id,
            template=step.template,
            # Per step, not per attempt: attempts past the last step repeat no email.
            cause=f"{cause}:{step.attempt_count}",
            facts=invoice,
            now=now,
        )
    current = dunning_access(connection, customer_id)
    wanted = access_after_failure(policy, attempt_count, current)
    if wanted != current:
        _set_access(connection, customer_id, wanted, cause=f"{cause}:{wanted}", now=now)


def clear_dunning(connection: Connection, *, customer_id: str, cause: str, now: datetime) -> bool:
    """Give access back to the subscription's own status; True when dunning was holding it."""
    if dunning_access(connection, customer_id) is None:
        return False
    _set_access(connection, customer_id, None, cause=f"{cause}:restored", now=now)
    return True


def _set_access(
    connection: Connection, customer_id: str, access: Access | None, *, cause: str, now: datetime
) -> None:
    billing.set_dunning_access(connection, customer_id, access, now)
    note_customer_changes(connection, [customer_id], reason="dunning", now=now)
    queue_app_event(
        connection,
        event_type="customer.entitlements_changed",
        customer_id=customer_id,
        data={"customer": customer_id, "reason": "dunning", "dunning_access": access},
        cause=cause,
        now=now,
    )
