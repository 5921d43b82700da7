"""The spend cap and usage alerts as the pages show and change them.

The billing page (the customer) and the console's customer page (an operator) both show a
customer's cap and alerts and change them through the same use cases as the JSON API
(`set_spend_cap`, `create_alert`, `delete_alert`), then write an audit row naming who did it:
`customer:<id>` from the billing page, the operator from the console. Amounts come from forms in
the customer's currency ("12.50"), and are refused with a clear message when they are not one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tollgate.domain.catalog import Feature, FeatureType
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.money import currency_exponent, format_minor, to_minor_int
from tollgate.services.console_actions import record_operator_action
from tollgate.services.customer_actions import record_customer_action
from tollgate.services.deps import Deps
from tollgate.services.spend_caps import SpendCapView, get_spend_cap, set_spend_cap
from tollgate.services.usage.alerts import AlertView, create_alert, delete_alert, list_alerts

ALERT_KIND_WORDS = {
    "units": "units used",
    "percent": "% of what the plan includes",
    "money": "of overage",
}


@dataclass(frozen=True)
class AlertLine:
    """An alert as a page lists it: what it watches, in words."""

    alert: AlertView
    feature_name: str
    text: str


@dataclass(frozen=True)
class UsageControls:
    """What the pages show of a customer's spend cap and alerts, and what may change them."""

    customer_id: str
    currency: str
    spend_cap: SpendCapView
    cap_text: str | None  # "$50.00", None without a cap
    cap_input: str  # the cap in major units for a form's field ("50.00"; "" without a cap)
    customer_may_cap: bool  # the catalog's `customer_spend_caps`
    alerts: list[AlertLine]
    features: list[tuple[str, str]]  # metered features an alert may watch: (id, name)


def usage_controls(
    deps: Deps,
    *,
    customer_id: str,
) -> UsageControls:
    """Return the customer's spend cap and alerts, in the words the pages use."""
    catalog = deps.catalog
    cap = get_spend_cap(deps, customer_id=customer_id)
    metered = {
        feature_id: feature
        for feature_id, feature in catalog.features.items()
        if feature.type is FeatureType.METERED
    }
    lines = []
    for alert in list_alerts(db=deps.db, customer_id=customer_id):
        feature = metered.get(alert.feature)
        name = feature.name if feature else alert.feature
        lines.append(AlertLine(alert, name, alert_text(alert, cap.currency, feature)))
    return UsageControls(
        customer_id=customer_id,
        currency=cap.currency,
        spend_cap=cap,
        cap_text=None if cap.amount is None else format_minor(cap.amount, cap.currency),
        cap_input=""
        if cap.amount is None
        else format(Decimal(cap.amount).scaleb(-currency_exponent(cap.currency)), "f"),
        customer_may_cap=catalog.customer_spend_caps,
        alerts=lines,
        features=[(feature_id, feature.name) for feature_id, feature in metered.items()],
    )


def alert_text(alert: AlertView, currency: str, feature: Feature | None = None) -> str:
    """Say what an alert watches: "80 % of what the plan includes", "5,000 runs used"."""
    if alert.kind == "money":
        return f"{format_minor(alert.threshold, currency)} of overage"
    if alert.kind == "percent":
        return f"{alert.threshold:,} % of what the plan includes"
    unit = (feature.unit if feature is not None else None) or "units"
    return f"{alert.threshold:,} {unit} used"


def amount_from_form(text: str, currency: str, *, param: str) -> int | None:
    """Minor units of an amount typed in major units ("12.50"); None for an empty field."""
    text = text.strip().replace(",", "")
    if not text:
        return None
    try:
        return to_minor_int(text.lstrip("$€£¥"), currency)
    except (ValueError, ArithmeticError):
        raise InvalidRequest(
            f"enter an amount in {currency.upper()} such as 50 or 12.50", param=param
        ) from None


def threshold_from_form(kind: str, text: str, currency: str) -> int:
    """An alert's threshold from a form: minor units for money, a whole number otherwise."""
    if kind == "money":
        amount = amount_from_form(text, currency, param="threshold")
        if amount is None:
            raise InvalidRequest("enter the overage amount to be alerted at", param="threshold")
        return amount
    text = text.strip().replace(",", "")
    if not text.isdigit() or len(text) > 15:
        raise InvalidRequest("the threshold must be a whole number, 1 or more", param="threshold")
    return int(text)


def set_cap_from_page(
    deps: Deps,
    *,
    customer_id: str,
    amount_text: str,
    actor: str | None,
) -> SpendCapView:
    """Set (or, with an empty amount, remove) the cap from a page: as the customer when
    `actor` is None (where the catalog allows), else as that operator; audited either way."""
    currency = get_spend_cap(deps, customer_id=customer_id).currency
    amount = amount_from_form(amount_text, currency, param="amount")
    view = set_spend_cap(
        deps,
        customer_id=customer_id,
        amount=amount,
        currency=None,
        actor=actor or "customer",
        by_customer=actor is None,
    )
    _audit(deps, customer_id, actor, "set_spend_cap", {"amount_minor": amount})
    return view


def add_alert_from_page(
    deps: Deps,
    *,
    customer_id: str,
    feature: str,
    kind: str,
    threshold_text: str,
    actor: str | None,
) -> AlertView:
    """Add an alert from a page (as the customer when `actor` is None); audited."""
    if kind not in ALERT_KIND_WORDS:
        raise InvalidRequest("choose what the alert watches", param="kind")
    currency = get_spend_cap(deps, customer_id=customer_id).currency
    threshold = threshold_from_form(kind, threshold_text, currency)
    view = create_alert(
        deps,
        customer_id=customer_id,
        feature=feature,
        kind=kind,
        threshold=threshold,
        alert_id=None,
    )
    details = {"alert": view.id, "feature": feature, "kind": kind, "threshold": threshold}
    _audit(deps, customer_id, actor, "add_usage_alert", details)
    return view


def remove_alert_from_page(
    deps: Deps,
    *,
    customer_id: str,
    alert_id: str,
    actor: str | None,
) -> None:
    """Remove one of the customer's alerts from a page (as the customer when `actor` is None);
    audited."""
    delete_alert(db=deps.db, customer_id=customer_id, alert_id=alert_id)
    _audit(deps, customer_id, actor, "remove_usage_alert", {"alert": alert_id})


def change_from_page(
    deps: Deps,
    *,
    customer_id: str,
    change: str,
    fields: Mapping[str, str],
    actor: str | None,
) -> None:
    """Apply one of the pages' forms (`change`: spend-cap, add-alert or remove-alert; its
    `fields` as posted), as the customer when `actor` is None, else as that operator."""
    if change == "spend-cap":
        set_cap_from_page(
            deps,
            customer_id=customer_id,
            amount_text=fields.get("amount", ""),
            actor=actor,
        )
    elif change == "add-alert":
        add_alert_from_page(
            deps,
            customer_id=customer_id,
            feature=fields.get("feature", ""),
            kind=fields.get("kind", ""),
            threshold_text=fields.get("threshold", ""),
            actor=actor,
        )
    elif change == "remove-alert":
        remove_alert_from_page(
            deps,
            customer_id=customer_id,
            alert_id=fields.get("alert", ""),
            actor=actor,
        )
    else:
        raise NotFound(f"there is no change {change!r} of the spend cap or alerts")


def _audit(
    deps: Deps,
    customer_id: str,
    actor: str | None,
    action: str,
    details: dict[str, Any],
) -> None:
    if actor is None:
        record_customer_action(
            db=deps.db, clock=deps.clock, customer_id=customer_id, action=action, details=details
        )
        return
    record_operator_action(
        db=deps.db,
        clock=deps.clock,
        actor=actor,
        customer_id=customer_id,
        action=action,
        details=details,
    )
