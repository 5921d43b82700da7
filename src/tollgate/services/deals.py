"""Per-customer deals (issue 20): set and remove overrides, grant included usage; audited.

Each change is written with its audit row and a change-feed entry in one transaction, so every
server drops the customer's cached decision at once (within its change-feed look).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tollgate.db.queries import deals as queries
from tollgate.db.queries.audit import record_audit
from tollgate.db.queries.changes import note_customer_changes
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import FeatureType
from tollgate.domain.deals import FeatureOverride, check_override
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound
from tollgate.services.customers import load_customer
from tollgate.services.deps import Deps
from tollgate.services.entitlements import load_billing_customers
from tollgate_client.views import timestamp_json


def set_override(
    deps: Deps,
    *,
    customer_id: str,
    feature: str,
    enabled: bool | None,
    limit: int | str | None,
    ends_at: datetime | None,
    actor: str,
) -> FeatureOverride:
    """Give the customer its own grant of `feature` (replacing any), until `ends_at` if given."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    now = clock.now()
    value = check_override(catalog, feature, enabled=enabled, limit=limit, ends_at=ends_at, now=now)
    with db.transaction() as session:
        load_customer(session, customer_id)  # NotFound for an unknown customer
        connection = session.connection()
        before = queries.override(connection, customer_id, feature)
        if before == value:
            return value  # the same grant again (a retry, a form sent twice): nothing changes
        queries.put_override(connection, customer_id, value, actor=actor, now=now)
        record_audit(
            connection,
            actor=actor,
            object_type="customer_override",
            object_id=f"{customer_id}/{feature}",
            action="updated" if before else "created",
            before=before.to_json() if before else None,
            after=value.to_json(),
            now=now,
        )
        note_customer_changes(connection, [customer_id], reason="override", now=now)
    return value


def remove_override(
    deps: Deps,
    *,
    customer_id: str,
    feature: str,
    actor: str,
) -> None:
    """Drop the customer's override of `feature`: the plan decides it again."""
    db, clock = deps.db, deps.clock
    now = clock.now()
    with db.transaction() as session:
        load_customer(session, customer_id)
        connection = session.connection()
        before = queries.override(connection, customer_id, feature)
        if before is None or not queries.delete_override(connection, customer_id, feature):
            raise NotFound(
                f"customer {customer_id!r} has no override of {feature!r}", param="feature"
            )
        record_audit(
            connection,
            actor=actor,
            object_type="customer_override",
            object_id=f"{customer_id}/{feature}",
            action="deleted",
            before=before.to_json(),
            after=None,
            now=now,
        )
        note_customer_changes(connection, [customer_id], reason="override", now=now)


def list_overrides(*, db: Database, customer_id: str) -> list[FeatureOverride]:
    """Return the customer's overrides, ended ones too."""
    with db.transaction() as session:
        load_customer(session, customer_id)
        return queries.overrides(session.connection(), customer_id)


@dataclass(frozen=True)
class UsageGrantView:
    """Included usage given for one period."""

    customer_id: str
    feature: str
    quantity: int
    period_start: datetime
    period_end: datetime
    reason: str | None
    idempotency_key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer_id,
            "feature": self.feature,
            "quantity": self.quantity,
            "period_start": timestamp_json(self.period_start),
            "period_end": timestamp_json(self.period_end),
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
        }


def grant_usage(
    deps: Deps,
    *,
    customer_id: str,
    feature: str,
    quantity: int,
    reason: str | None,
    idempotency_key: str,
    actor: str,
) -> tuple[UsageGrantView, bool]:
    """Add `quantity` included units of a metered feature for the customer's current period,
    once per `idempotency_key`; return the grant and whether it was made now."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    if catalog.feature(feature).type is not FeatureType.METERED:
        raise InvalidRequest(
            f"{feature} is not metered: grant usage of a metered feature", param="feature"
        )
    if quantity <= 0:
        raise InvalidRequest("quantity must be at least 1", param="quantity")
    now = clock.now()
    with db.transaction() as session:
        load_customer(session, customer_id)
        connection = session.connection()
        earlier = queries.grant_by_key(connection, customer_id, idempotency_key)
        if earlier is not None:
            return _repeated_grant(earlier, feature, quantity), False
        period = load_billing_customers(connection, catalog, [customer_id], now)[customer_id].period
        row = {
            "customer_id": customer_id,
            "feature": feature,
            "quantity": quantity,
            "period_start": period.start,
            "period_end": period.end,
            "reason": reason,
            "idempotency_key": idempotency_key,
            "actor": actor,
            "created_at": now,
        }
        if not queries.insert_grant(connection, row):  # the same key, made at this moment
            earlier = queries.grant_by_key(connection, customer_id, idempotency_key)
            return _repeated_grant(earlier, feature, quantity), False
        record_audit(
            connection,
            actor=actor,
            object_type="usage_grant",
            object_id=f"{customer_id}/{idempotency_key}",
            action="created",
            before=None,
            after={"feature": feature, "quantity": quantity, "reason": reason},
            now=now,
        )
        note_customer_changes(connection, [customer_id], reason="grant", now=now)
    view = UsageGrantView(
        customer_id, feature, quantity, period.start, period.end, reason, idempotency_key
    )
    return view, True


def _repeated_grant(earlier: Any, feature: str, quantity: int) -> UsageGrantView:
    """The grant an idempotency key already made, if this request asks for the same one."""
    if (earlier.feature, earlier.quantity) != (feature, quantity):
        raise Conflict(
            f"idempotency_key {earlier.idempotency_key!r} was used for another grant",
            param="idempotency_key",
        )
    return _grant_view(earlier)


def _grant_view(row: Any) -> UsageGrantView:
    return UsageGrantView(
        row.customer_id,
        row.feature,
        int(row.quantity),
        row.period_start,
        row.period_end,
        row.reason,
        row.idempotency_key,
    )
