"""What the billing page shows, gathered from the same services the JSON routes call."""

from __future__ import annotations

from dataclasses import dataclass

from tollgate.bootstrap import Container
from tollgate.domain.billing_words import StatusWords, status_words, usage_state
from tollgate.domain.catalog import Catalog, Plan
from tollgate.domain.discount_words import discount_terms, version_words
from tollgate.domain.subscriptions import is_live
from tollgate.domain.wording import UnitName, count_text, overage_rate_text
from tollgate.money import format_minor
from tollgate.services import credits, customer_billing, customers, usage
from tollgate.services.addons import AddOnOffer, list_addons
from tollgate.services.bank_transfers import BankTransfersView, get_bank_transfers
from tollgate.services.subscriptions.reading import get_subscription
from tollgate.services.usage.reading import MeterUsage
from tollgate.web.charts import DailyChart, bar_percent, daily_chart
from tollgate_client.views import CreditsView, CustomerView, SubscriptionView

STATE_WORDS = {
    "ok": "",
    "warn": "80 % or more used",  # the bar says how much
    "full": "Over the included amount",
    "blocked": "Limit reached: blocked",
}


@dataclass(frozen=True)
class MeterLine:
    usage: MeterUsage
    state: str
    state_words: str
    percent_fill: float
    used_text: str
    included_text: str
    overage_rate: str | None
    chart: DailyChart


@dataclass(frozen=True)
class PlanChoice:
    plan: Plan
    intervals: list[str]


@dataclass(frozen=True)
class DiscountLine:
    name: str
    terms: str  # "20 % off, forever"


@dataclass(frozen=True)
class AddOnLine:
    offer: AddOnOffer
    price_text: str  # "$5.00 a month each"
    grants_text: str  # "+10,000 runs a period, SSO"


@dataclass(frozen=True)
class Overview:
    customer: CustomerView
    subscription: SubscriptionView
    plan_name: str
    plan: Plan | None
    words: StatusWords
    live: bool
    meters: list[MeterLine]
    estimated_overage: int
    currency: str
    credits: CreditsView
    invoices: customer_billing.InvoicePage
    choices: list[PlanChoice]
    packs: list[tuple[str, str]]
    # Issue 20: the plan version when it has had more than one, discounts, add-ons to buy.
    version_words: str | None = None
    discounts: tuple[DiscountLine, ...] = ()
    addons: tuple[AddOnLine, ...] = ()
    # Issue 21: with automatic tax, the next invoice as Stripe previews it, tax by tax.
    upcoming: customer_billing.UpcomingInvoice | None = None
    # Issue 21: what a customer paying by bank transfer has to send, and its cash balance.
    transfers: BankTransfersView | None = None


def plan_name(catalog: Catalog, plan_id: str | None) -> str:
    plan = catalog.plans.get(plan_id or "")
    return plan.name if plan else (plan_id or "No plan")


def plan_choices(catalog: Catalog, currency: str) -> list[PlanChoice]:
    """Return the self-serve plans a customer may pick on the page (in its currency)."""
    choices = []
    for plan in catalog.plans.values():
        if plan.custom:
            continue
        intervals = [str(p.interval) for p in plan.prices if p.currency == currency]
        if plan.is_free or intervals:
            choices.append(PlanChoice(plan, sorted(set(intervals), key=["month", "year"].index)))
    return choices


def billing_overview(app: Container, customer_id: str) -> Overview:
    """Return everything the billing page shows of one customer."""
    catalog = app.catalog
    now = app.clock.now()
    customer = customers.get_customer(app, customer_id=customer_id)
    subscription = get_subscription(app, customer_id=customer_id)
    used = usage.get_usage(app, customer_id=customer_id)
    name = plan_name(catalog, subscription.plan)
    words = status_words(
        status=subscription.status,
        plan_name=name,
        trial_end=subscription.trial_end,
        period_end=subscription.current_period_end,
        period_start=subscription.current_period_start,
        grace=app.grace,
        now=now,
    )
    previous = customer_billing.previous_period(used.period)
    currency = subscription.currency or customer.currency
    meters = []
    overage_total = 0
    shown = [
        meter
        for meter in used.meters
        # a feature the plan does not grant and that was never used has no bar
        if meter.included or meter.used or meter.limit != 0
    ]
    current = customer_billing.period_daily_usage(
        app,
        customer_id=customer_id,
        period=used.period,
        used={meter.meter: meter.used for meter in shown},
    )
    before = customer_billing.period_daily_usage(
        app, customer_id=customer_id, period=previous, used={meter.meter: None for meter in shown}
    )
    for meter in shown:
        history = {"current": current[meter.meter], "previous": before[meter.meter]}
        feature = catalog.features[meter.meter]
        unit = UnitName(feature.unit or "unit")
        plan = catalog.plans.get(used.plan or "")
        grant = plan.features.get(meter.meter) if plan else None
        rate = (
            overage_rate_text(grant.overage, currency, unit)
            if grant is not None and grant.overage is not None and not grant.hard
            else None
        )
        state = usage_state(meter.used, meter.included, meter.hard)
        if meter.estimated_overage is not None:
            overage_total += meter.estimated_overage.amount_minor
        meters.append(
            MeterLine(
                usage=meter,
                state=state,
                state_words=STATE_WORDS[state],
                percent_fill=bar_percent(meter.used, meter.included),
                used_text=count_text(meter.used, unit),
                included_text=count_text(meter.included, unit)
                if meter.included is not None
                else "unlimited",
                overage_rate=rate,
                chart=daily_chart(
                    start=used.period.start,
                    current=[value for _, value in history["current"].buckets],
                    previous=[value for _, value in history["previous"].buckets],
                    unit=unit(2),
                    now=now,
                ),
            )
        )
    packs = []
    for pack in catalog.credit_packs.values():
        price = pack.price_in(currency)
        if price is not None:
            cost = format_minor(price.amount_minor, currency)
            packs.append((pack.id, f"{pack.name}: {pack.credits:,} credits for {cost}"))
    live = subscription.stripe_subscription_id is not None and is_live(subscription.status)
    upcoming = None
    if live and app.settings.stripe_automatic_tax:
        upcoming = customer_billing.upcoming_invoice(app, customer_id=customer_id)
    return Overview(
        customer=customer,
        subscription=subscription,
        plan_name=name,
        plan=catalog.plans.get(subscription.plan or ""),
        words=words,
        live=live,
        meters=meters,
        estimated_overage=overage_total,
        currency=currency,
        credits=credits.list_credits(db=app.db, customer_id=customer_id, limit=5),
        invoices=customer_billing.list_invoices(db=app.db, customer_id=customer_id, limit=12),
        choices=plan_choices(catalog, currency),
        packs=packs,
        version_words=version_words(
            version=subscription.plan_version,
            newest=catalog.plans[subscription.plan].version
            if subscription.plan in catalog.plans
            else None,
        ),
        discounts=tuple(
            DiscountLine(
                name=discount.name or discount.coupon,
                terms=discount_terms(
                    percent_off=discount.percent_off,
                    amount_off=discount.amount_off,
                    currency=discount.currency,
                    duration=discount.duration,
                    duration_in_months=discount.duration_in_months,
                    end=discount.end,
                ),
            )
            for discount in subscription.discounts
            if discount.end is None or discount.end > now  # a repeating coupon that ended
        ),
        addons=tuple(
            _addon_line(catalog, offer) for offer in list_addons(app, customer_id=customer_id)
        ),
        upcoming=upcoming,
        transfers=get_bank_transfers(db=app.db, customer_id=customer_id),
    )


def _addon_line(catalog: Catalog, offer: AddOnOffer) -> AddOnLine:
    price = offer.price
    each = f"{format_minor(price.amount_minor, price.currency)} a {price.interval} each"
    grants = []
    for feature_id, grant in offer.addon.grants.items():
        feature = catalog.features.get(feature_id)
        name = feature.name if feature is not None else feature_id
        if grant is True:
            grants.append(name)
        elif isinstance(grant, int) and not isinstance(grant, bool):
            unit = UnitName(feature.unit or "unit") if feature is not None else UnitName("unit")
            grants.append(f"+{count_text(grant, unit)}")
    return AddOnLine(offer, each, ", ".join(grants))
