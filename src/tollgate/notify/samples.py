"""Facts a template can be previewed with when no customer has been sent it yet.

Drawn from the catalog (its plans, prices and metered features), so a preview reads like the
mails the founder's own customers will get.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tollgate.domain.catalog import Catalog, FeatureType, Plan
from tollgate.domain.wording import UnitName, overage_rate_text

DAY = timedelta(days=1)


def sample_facts(template: str, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """Return plausible facts for `template` from the catalog."""
    paid = _first(plan for plan in catalog.plans.values() if plan.prices and not plan.custom)
    price = paid.prices[0] if paid else None
    amount = {"amount": price.amount_minor, "currency": price.currency} if price else None
    invoice = {
        "invoice": "in_sample",
        "number": "SAMPLE-0001",
        "amount_due": amount,
        "amount_paid": amount,
        "attempt_count": 2,
        "next_payment_attempt": (now + 3 * DAY).isoformat(),
        "days_left": 3,
        "hosted_invoice_url": "https://invoice.stripe.com/i/sample",
        "invoice_pdf": "https://invoice.stripe.com/i/sample/pdf",
    }
    subscription = {
        "subscription": "sub_sample",
        "plan": paid.id if paid else catalog.default_plan,
        "interval": price.interval if price else "month",
        "amount": amount,
        "trial_end": (now + 3 * DAY).isoformat(),
        "current_period_end": (now + 30 * DAY).isoformat(),
        "access_until": (now + 30 * DAY).isoformat(),
        "ended_at": now.isoformat(),
    }
    if template.startswith("usage_"):
        return _usage_facts(template, catalog, now)
    if template.startswith("dispute_"):
        return {
            "dispute": "dp_sample",
            "charge": "ch_sample",
            "amount": amount,
            "reason": "fraudulent",
            "status": "lost" if template == "dispute_closed" else "needs_response",
            "evidence_due_by": (now + 7 * DAY).isoformat(),
        }
    if template.startswith(("payment_", "downgraded_payment")):
        return {**invoice, "plan": subscription["plan"]}
    if template == "card_limit_passed" and price is not None:
        return {
            "amount": {"amount": price.amount_minor * 2, "currency": price.currency},
            "limit": {
                "amount": price.amount_minor + price.amount_minor // 2,
                "currency": price.currency,
            },
            "methods": ["us_bank_account"],
            "renews_at": subscription["current_period_end"],
        }
    if template == "price_change":
        return {
            **subscription,
            "old_amount": amount,
            "effective_at": subscription["current_period_end"],
        }
    return subscription


def _usage_facts(template: str, catalog: Catalog, now: datetime) -> dict[str, Any]:
    exceeded = template == "usage_exceeded"
    for plan in catalog.plans.values():
        for feature_id, grant in plan.features.items():
            feature = catalog.features[feature_id]
            if feature.type is not FeatureType.METERED or not grant.included:
                continue
            unit = UnitName(feature.unit or feature.name.lower())
            used = grant.included if exceeded else grant.included * 8 // 10
            facts: dict[str, Any] = {
                "feature": feature_id,
                "feature_name": feature.name,
                "units": unit(2),
                "percent": 100 if exceeded else 80,
                "used": used,
                "included": grant.included,
                "hard_limit": grant.hard,
                "plan": plan.id,
                "period_end": (now + 12 * DAY).isoformat(),
            }
            upgrade = _first(p for p in catalog.plans.values() if p.prices and p.id != plan.id)
            if grant.hard and upgrade:
                facts["upgrade_plan_name"] = upgrade.name
            if grant.overage is not None:
                currency = plan.prices[0].currency if plan.prices else catalog.currency
                facts["overage_rate_text"] = overage_rate_text(grant.overage, currency, unit)
            return facts
    return {"feature_name": "usage", "units": "units", "used": 0, "included": 0, "percent": 80}


def _first(plans: Any) -> Plan | None:
    return next(iter(plans), None)
