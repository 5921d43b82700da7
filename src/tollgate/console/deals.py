"""The console's per-customer deals (issue 20): an override of a feature, its removal, and a
one-off grant of included usage, read from the customer page's forms and run through the same
use cases as `PUT …/overrides/{feature}` and `POST …/grants`, as the operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from tollgate.bootstrap import Container
from tollgate.domain.errors import InvalidRequest
from tollgate.services.deals import grant_usage, remove_override, set_override

DEAL_ACTIONS = ("set-override", "remove-override", "grant-usage")
DEAL_DONE = {
    "override": "The override was saved; entitlements follow it now.",
    "override-removed": "The override was removed; the plan decides again.",
    "usage": "The usage was granted for this period.",
}


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _limit(raw: str) -> int | str | None:
    if not raw:
        return None
    if raw.lower() == "unlimited":
        return "unlimited"
    if not raw.replace(",", "").isdigit():
        raise InvalidRequest('limit must be a whole number or "unlimited"', param="limit")
    return int(raw.replace(",", ""))


def _ends_at(raw: str) -> datetime | None:
    if not raw:
        return None
    try:
        day = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("ends must be a date (2027-03-31)", param="ends_at") from None
    return day if day.tzinfo else day.replace(tzinfo=UTC)


def run_deal_action(
    *, app: Container, actor: str, customer_id: str, action: str, form: FormData
) -> tuple[str, dict[str, Any]]:
    """Run one deal form; return the page's `done` key and what to audit."""
    feature = _field(form, "feature")
    if action == "set-override":
        access = _field(form, "access")
        if access not in ("", "on", "off"):
            raise InvalidRequest("access must be on, off or as the plan says", param="enabled")
        value = set_override(
            app,
            customer_id=customer_id,
            feature=feature,
            enabled={"on": True, "off": False}.get(access),
            limit=_limit(_field(form, "limit")),
            ends_at=_ends_at(_field(form, "ends_at")),
            actor=actor,
        )
        return "override", value.to_json()
    if action == "remove-override":
        remove_override(app, customer_id=customer_id, feature=feature, actor=actor)
        return "override-removed", {"feature": feature}
    quantity = _field(form, "quantity").replace(",", "")
    if not quantity.isdigit() or int(quantity) <= 0:
        raise InvalidRequest("quantity must be a whole number above zero", param="quantity")
    granted, _ = grant_usage(
        app,
        customer_id=customer_id,
        feature=feature,
        quantity=int(quantity),
        reason=_field(form, "reason")[:500] or None,
        idempotency_key=f"console-{_field(form, 'key') or actor}",
        actor=actor,
    )
    return "usage", {"feature": feature, "quantity": granted.quantity}
