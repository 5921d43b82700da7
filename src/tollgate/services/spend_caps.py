"""Spend caps: the most a customer's overage may cost in a billing period.

Past the cap a soft limit becomes hard for the rest of the period: the recorder holds each
priced soft feature to the units whose overage still fits (`capped_limits`), so usage, consume
and reservations are refused there, to the minor unit. The operator sets a cap; the customer
may set its own where the catalog says `customer_spend_caps: true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from tollgate.db.queries import usage_controls as queries
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.services.deps import Deps
from tollgate.services.entitlements import load_billing_customers


class NotAllowed(TollgateError):
    """The catalog does not let customers do this themselves."""

    type: ClassVar[str] = "permission_error"
    status: ClassVar[int] = 403


@dataclass(frozen=True)
class SpendCapView:
    customer: str
    amount: int | None
    currency: str
    set_by: str | None
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "spend_cap": None
            if self.amount is None
            else {"amount": self.amount, "currency": self.currency},
            "set_by": self.set_by,
            "updated": self.updated_at.isoformat() if self.updated_at else None,
        }


def set_spend_cap(
    deps: Deps,
    *,
    customer_id: str,
    amount: Any,
    currency: Any,
    actor: str,
    by_customer: bool,
) -> SpendCapView:
    """Set the customer's spend cap (None removes it)."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    if by_customer and not catalog.customer_spend_caps:
        raise NotAllowed(
            "customers may not set their own spend cap: the catalog does not say "
            "`customer_spend_caps: true`",
            param="by_customer",
        )
    now = clock.now()
    with db.write_connection() as connection:
        customer = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        if amount is None:
            queries.delete_spend_cap(connection, customer_id)
            return SpendCapView(customer_id, None, customer.currency, None, None)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise InvalidRequest("amount must be whole minor units, 0 or more", param="amount")
        if currency is not None and str(currency).lower() != customer.currency:
            raise InvalidRequest(
                f"the customer is billed in {customer.currency}; a cap in {currency} cannot apply",
                param="currency",
            )
        who = "customer" if by_customer else actor
        queries.put_spend_cap(
            connection,
            {
                "customer_id": customer_id,
                "amount_minor": amount,
                "currency": customer.currency,
                "set_by": who,
                "updated_at": now,
            },
        )
    return SpendCapView(customer_id, amount, customer.currency, who, now)


def get_spend_cap(
    deps: Deps,
    *,
    customer_id: str,
) -> SpendCapView:
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    with db.engine.connect() as connection:
        customer = load_billing_customers(connection, catalog, [customer_id], clock.now()).get(
            customer_id
        )
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}", param="id")
        row = queries.spend_cap_row(connection, customer_id)
        connection.rollback()
    if row is None:
        return SpendCapView(customer_id, None, customer.currency, None, None)
    return SpendCapView(
        customer_id, int(row.amount_minor), row.currency, row.set_by, row.updated_at
    )
