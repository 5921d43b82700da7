"""What a customer's billing page and its JSON show: invoices, usage history, change previews.

`list_invoices` pages through the invoice mirror (newest first, by cursor), `usage_history`
sums recorded usage events into hour or day buckets, and `preview_subscription_change` asks
Stripe what a plan, interval or seat change would invoice now and at renewal before anything
is committed. `billing_overview` gathers everything the billing page shows from the same
services the JSON routes call.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tollgate.clock import Clock
from tollgate.db.queries import customer_pages
from tollgate.db.queries.discounts import discounts_by_id
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Aggregation, Catalog, FeatureType
from tollgate.domain.errors import InvalidRequest, NotFound
from tollgate.domain.metering import Period, add_months
from tollgate.domain.subscriptions import ChangeTiming, CurrentTerms, change_timing, is_live
from tollgate.domain.tax import tax_note
from tollgate.services.closed_days import Kept
from tollgate.services.customers import current_subscription, live_subscription
from tollgate.services.deps import Deps
from tollgate.services.entitlements import load_billing_customers
from tollgate.services.subscriptions.lookups import (
    current_amount,
    item_changes,
    online_customer,
    terms_for,
)
from tollgate.stripe.errors import StripeFailure
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import invoice_snapshot, tax_rate_snapshot

GRANULARITIES = ("hour", "day")
# The most buckets one history answers: 93 days of hours, or about 5 years of days.
MAX_BUCKETS = 93 * 24


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


# -- invoices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceDiscount:
    """What one discount took off an invoice (Stripe's `total_discount_amounts`)."""

    discount: str
    coupon: str | None  # the catalog's coupon (else Stripe's id); None until it is fetched
    name: str | None
    amount: int


@dataclass(frozen=True)
class InvoiceTax:
    """One tax of an invoice at one rate (Stripe's `total_taxes`, with the rate's terms)."""

    name: str  # the rate's display name: GST, QST, VAT, Sales Tax
    jurisdiction: str | None
    percentage: str | None  # exact text: "9.975"
    inclusive: bool
    amount: int

    @property
    def label(self) -> str:
        """The line as invoices print it: "QST 9.975 %"."""
        return f"{self.name} {self.percentage} %" if self.percentage else self.name


@dataclass(frozen=True)
class InvoiceView:
    """An invoice as the customer sees it; amounts in minor units of `currency`."""

    id: str
    number: str | None
    status: str | None
    currency: str
    total: int
    amount_due: int
    amount_paid: int
    created: datetime
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    subtotal: int | None = None  # before discounts and tax (issue 20)
    discounts: tuple[InvoiceDiscount, ...] = ()

    @property
    def discount_total(self) -> int:
        return sum(discount.amount for discount in self.discounts)

    tax: int = 0  # included in `total`
    billing_reason: str | None = None  # Stripe's: subscription_cycle, subscription_update, …
    taxes: tuple[InvoiceTax, ...] = ()
    tax_exempt: str | None = None  # the customer's status it was made for: exempt, reverse
    # What is still to pay (issue 21: a bank transfer may pay part of it).
    amount_remaining: int = 0

    @property
    def tax_note(self) -> str | None:
        """What the invoice says about a tax it does not charge."""
        return tax_note(self.tax_exempt)

    def to_json(self) -> dict[str, Any]:
        def money(amount: int) -> dict[str, Any]:
            return {"amount": amount, "currency": self.currency}

        return {
            "id": self.id,
            "number": self.number,
            "status": self.status,
            "total": money(self.total),
            "tax": money(self.tax),
            "taxes": [
                {
                    "name": tax.name,
                    "jurisdiction": tax.jurisdiction,
                    "percentage": tax.percentage,
                    "inclusive": tax.inclusive,
                    "amount": money(tax.amount),
                }
                for tax in self.taxes
            ],
            "tax_exempt": self.tax_exempt,
            "tax_note": self.tax_note,
            "amount_due": money(self.amount_due),
            "amount_paid": money(self.amount_paid),
            "amount_remaining": money(self.amount_remaining),
            "created": _iso(self.created),
            "period_start": _iso(self.period_start),
            "period_end": _iso(self.period_end),
            "hosted_invoice_url": self.hosted_invoice_url,
            "invoice_pdf": self.invoice_pdf,
            "subtotal": money(self.subtotal) if self.subtotal is not None else None,
            "total_discount": money(self.discount_total),
            "discounts": [
                {
                    "discount": discount.discount,
                    "coupon": discount.coupon,
                    "name": discount.name,
                    "amount": money(discount.amount),
                }
                for discount in self.discounts
            ],
        }


@dataclass(frozen=True)
class InvoicePage:
    data: list[InvoiceView]
    has_more: bool
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "data": [invoice.to_json() for invoice in self.data],
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


def _cursor(invoice: InvoiceView) -> str:
    raw = f"{invoice.created.isoformat()}|{invoice.id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, invoice_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("the cursor is not one this API gave", param="cursor") from None
    if moment.tzinfo is None or not invoice_id:
        raise InvalidRequest("the cursor is not one this API gave", param="cursor")
    return moment, invoice_id


def list_invoices(
    *, db: Database, customer_id: str, limit: int = 20, cursor: str | None = None
) -> InvoicePage:
    """Return a page of the customer's invoices (drafts left out), newest first (`cursor`: the
    last page's)."""
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100", param="limit")
    before = _after(cursor) if cursor else None
    with db.engine.connect() as connection:
        rows = customer_pages.invoices_page(
            connection, customer_id=customer_id, limit=limit + 1, before=before
        )
        if not rows:  # no invoices, or no such customer: only then is it worth asking
            _require_customer(db, connection, customer_id)
        named = [d["discount"] for row in rows for d in row.discount_amounts or []]
        coupons = discounts_by_id(connection, named) if named else {}
        connection.rollback()
    views = [
        InvoiceView(
            id=row.id,
            number=row.number,
            status=row.status,
            currency=row.currency,
            total=row.total,
            amount_due=row.amount_due,
            amount_paid=row.amount_paid,
            created=_aware(row.created_at),
            period_start=_aware(row.period_start),
            period_end=_aware(row.period_end),
            hosted_invoice_url=row.hosted_invoice_url,
            invoice_pdf=row.invoice_pdf,
            subtotal=row.subtotal,
            discounts=_invoice_discounts(row.discount_amounts, coupons),
            tax=row.tax or 0,
            taxes=invoice_taxes(row.tax_amounts),
            tax_exempt=row.customer_tax_exempt,
            billing_reason=row.billing_reason,
            amount_remaining=row.amount_remaining,
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return InvoicePage(views, more, _cursor(views[-1]) if more and views else None)


def invoice_taxes(amounts: list[dict[str, Any]] | None) -> tuple[InvoiceTax, ...]:
    """Return an invoice's mirrored taxes (`invoices.tax_amounts`), one per rate."""
    return tuple(
        InvoiceTax(
            name=str(entry.get("display_name") or "Tax"),
            jurisdiction=entry.get("jurisdiction"),
            percentage=entry.get("percentage"),
            inclusive=bool(entry.get("inclusive")),
            amount=int(entry["amount"]),
        )
        for entry in amounts or []
    )


def _invoice_discounts(
    amounts: list[dict[str, Any]] | None, coupons: Mapping[str, Mapping[str, Any]]
) -> tuple[InvoiceDiscount, ...]:
    found = []
    for entry in amounts or []:
        coupon = coupons.get(entry["discount"])
        found.append(
            InvoiceDiscount(
                discount=entry["discount"],
                coupon=(coupon["catalog_coupon"] or coupon["coupon_id"]) if coupon else None,
                name=coupon["name"] if coupon else None,
                amount=int(entry["amount"]),
            )
        )
    return tuple(found)


def _aware(moment: Any) -> Any:
    if isinstance(moment, datetime) and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _require_customer(db: Database, connection: Any, customer_id: str) -> None:
    if not customer_pages.customer_exists(connection, customer_id):
        raise NotFound(f"no customer {customer_id!r}", param="id")


# -- usage history ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageHistory:
    """A meter's usage in consecutive buckets of [start, end) (empty buckets are 0)."""

    customer: str
    meter: str
    granularity: str
    start: datetime
    end: datetime
    buckets: list[tuple[datetime, int]]

    @property
    def total(self) -> int:
        return sum(value for _, value in self.buckets)

    def to_json(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "meter": self.meter,
            "granularity": self.granularity,
            "from": _iso(self.start),
            "to": _iso(self.end),
            "total": self.total,
            "buckets": [{"start": _iso(start), "value": value} for start, value in self.buckets],
        }


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def current_period(*, db: Database, catalog: Catalog, clock: Clock, customer_id: str) -> Period:
    """Return the customer's current billing period (its subscription's, else the month)."""
    now = clock.now()
    with db.engine.connect() as connection:
        found = load_billing_customers(connection, catalog, [customer_id], now).get(customer_id)
        connection.rollback()
    if found is None:
        raise NotFound(f"no customer {customer_id!r}", param="id")
    return found.period


def previous_period(period: Period) -> Period:
    """Return the period before `period`, as long as it (a month before a month, and so on)."""
    length = period.end - period.start
    if length >= timedelta(days=360):
        start = add_months(period.start, -12)  # a yearly period begun on 29 February too
    elif length >= timedelta(days=27):
        start = add_months(period.start, -1)
    else:
        start = period.start - length
    return Period(start, period.start)


def usage_history(
    deps: Deps,
    *,
    customer_id: str,
    meter: str,
    granularity: str = "day",
    start: datetime | None = None,
    end: datetime | None = None,
) -> UsageHistory:
    """Return the customer's usage of a metered feature in buckets (default: this period):
    each bucket's sum, or its greatest value for a `max` or `last` meter."""
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    feature = catalog.features.get(meter)
    if feature is None or feature.type is not FeatureType.METERED:
        metered = ", ".join(k for k, f in catalog.features.items() if f.type is FeatureType.METERED)
        raise InvalidRequest(f"{meter!r} is not a metered feature ({metered})", param="meter")
    if granularity not in GRANULARITIES:
        raise InvalidRequest("granularity must be hour or day", param="granularity")
    for name, moment in (("from", start), ("to", end)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidRequest(f"{name} needs a time zone (end it with Z)", param=name)
    if start is None or end is None:
        period = current_period(db=db, catalog=catalog, clock=clock, customer_id=customer_id)
        start = start or period.start
        end = end or period.end
    first, stop = _floor(start, granularity), end.astimezone(UTC)
    if stop <= first:
        raise InvalidRequest("to must be after from", param="to")
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    if (stop - first) / step > MAX_BUCKETS:
        raise InvalidRequest(
            f"at most {MAX_BUCKETS} {granularity}s at a time; narrow from and to", param="from"
        )
    aggregate: Literal["sum", "max"] = "sum" if feature.aggregation is Aggregation.SUM else "max"
    with db.engine.connect() as connection:
        _require_customer(db, connection, customer_id)
        found = dict(
            customer_pages.usage_buckets(
                connection,
                customer_id=customer_id,
                meter=meter,
                start=first,
                end=stop,
                granularity=granularity,  # type: ignore[arg-type]
                aggregate=aggregate,
            )
        )
        connection.rollback()
    buckets = []
    at = first
    while at < stop:
        buckets.append((at, found.get(at, 0)))
        at += step
    return UsageHistory(customer_id, meter, granularity, first, stop, buckets)


def period_daily_usage(
    deps: Deps,
    *,
    customer_id: str,
    period: Period,
    used: Mapping[str, int | None],
) -> dict[str, UsageHistory]:
    """Return each meter's daily usage over `period` (the billing page's chart), in one
    statement for all of `used`'s meters.

    The days that have ended are summed once per process (kept in `deps.closed_days`); today's
    are summed on every call.
    `used` holds each meter's usage in the period as its counter has it (None: not known): when
    a meter's days do not add up to it (an event arrived late for an earlier day), its ended
    days are summed again.

    Usage is kept by the hour, and a period rarely starts on one. Each hour is charted in the
    period it ends in (the hours `[start, end)`, both floored to the hour), so no hour is
    charted in two periods. A period that starts mid-day has a part day first and last, and
    day i of one period stands beside day i of the one before.
    """
    db, catalog, clock = deps.db, deps.catalog, deps.clock
    first = _floor(period.start, "day")
    lower, upper = _floor(period.start, "hour"), _floor(period.end, "hour")
    today = _floor(clock.now(), "day")
    split = min(max(today, lower), upper)  # a midnight, or one of the bounds
    meters = list(used)
    closed: dict[str, list[tuple[datetime, int]]] = {}
    for meter in meters:
        kept = deps.closed_days.get((customer_id, meter, period.start, split))
        if kept is not None:
            closed[meter] = kept
    missing = [meter for meter in meters if meter not in closed]
    open_part = _days(db, catalog, customer_id, meters, split, upper)
    stale = []
    for meter, buckets in closed.items():
        expected = used[meter]
        if expected is not None and not _adds_up(
            catalog, meter, buckets + open_part[meter], expected
        ):
            stale.append(meter)
    if missing or stale:
        summed = _days(db, catalog, customer_id, missing + stale, lower, split)
        for meter, buckets in summed.items():
            closed[meter] = buckets
            deps.closed_days.put((customer_id, meter, period.start, split), buckets)
    return {
        meter: UsageHistory(
            customer_id,
            meter,
            "day",
            first,
            period.end,
            closed.get(meter, []) + open_part.get(meter, []),
        )
        for meter in meters
    }


def _days(
    db: Database,
    catalog: Catalog,
    customer_id: str,
    meters: list[str],
    start: datetime,
    end: datetime,
) -> dict[str, list[tuple[datetime, int]]]:
    """Return each meter's day buckets of the hours [start, end), from the day `start` falls
    in (0 for days without events)."""
    if not meters or end <= start:
        return {meter: [] for meter in meters}
    with db.engine.connect() as connection:
        found = customer_pages.daily_usage_by_meter(
            connection, customer_id=customer_id, meters=meters, start=start, end=end
        )
        connection.rollback()
    result = {}
    for meter in meters:
        pick = 0 if catalog.features[meter].aggregation is Aggregation.SUM else 1
        buckets, at = [], _floor(start, "day")
        while at < end:
            values = found.get((meter, at))
            buckets.append((at, values[pick] if values else 0))
            at += timedelta(days=1)
        result[meter] = buckets
    return result


def _adds_up(catalog: Catalog, meter: str, buckets: list[tuple[datetime, int]], used: int) -> bool:
    values = [value for _, value in buckets]
    if catalog.features[meter].aggregation is Aggregation.SUM:
        return sum(values) == used
    return max(values, default=0) >= used


# -- the upcoming invoice --------------------------------------------------------------------


@dataclass(frozen=True)
class UpcomingInvoice:
    """What the subscription's next invoice will be, as Stripe previews it now."""

    currency: str
    total: int
    at: datetime | None
    taxes: tuple[InvoiceTax, ...] = ()
    tax_exempt: str | None = None

    @property
    def tax_note(self) -> str | None:
        return tax_note(self.tax_exempt)


# Previews kept for a few minutes per (database, customer, state version): a webhook that
# changes the customer bumps its version, and usage moves the amount only slowly.
UPCOMING: Kept[tuple[datetime, UpcomingInvoice]] = Kept(size=1024)
UPCOMING_FOR = timedelta(minutes=5)


def upcoming_invoice(deps: Deps, *, customer_id: str) -> UpcomingInvoice | None:
    """Return the live subscription's next invoice with its taxes, or None (no subscription,
    or Stripe not answering: the page shows the rest)."""
    db = deps.db
    customer, target = online_customer(db, deps.catalog, deps.optional_stripe(), customer_id)
    with db.transaction() as session:
        subscription = current_subscription(session, customer_id)
        if subscription is None or not is_live(subscription.status):
            return None
        subscription_id = subscription.id
    key = (db.url, customer_id, customer.state_version, subscription_id)
    now = deps.clock.now()
    kept = UPCOMING.get(key)
    if kept is not None and now - kept[0] < UPCOMING_FOR:
        return kept[1]
    try:
        preview = target.preview_subscription_invoice(
            stripe_customer_id=customer.stripe_id, subscription_id=subscription_id, details={}
        )
        found = invoice_snapshot({"id": "upcoming", **preview})
        terms = _rate_terms(db, target, [rate for rate, _ in found.tax_amounts])
    except StripeFailure:
        return None
    at = preview.get("next_payment_attempt") or preview.get("period_end")
    upcoming = UpcomingInvoice(
        currency=found.currency,
        total=found.total,
        at=datetime.fromtimestamp(int(at), UTC) if at else None,
        taxes=invoice_taxes(
            [{**terms.get(rate, {}), "amount": amount} for rate, amount in found.tax_amounts]
        ),
        tax_exempt=found.customer_tax_exempt,
    )
    UPCOMING.put(key, (now, upcoming))
    return upcoming


def _rate_terms(
    db: Database, gateway: StripeGateway, rate_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Return each tax rate's terms: from the mirror, else from Stripe."""
    if not rate_ids:
        return {}
    with db.engine.connect() as connection:
        terms = customer_pages.tax_rate_terms(connection, rate_ids)
        connection.rollback()
    missing = [rate for rate in rate_ids if rate not in terms]
    if missing:
        for raw in gateway.retrieve_tax_rates(",".join(missing)):
            found = tax_rate_snapshot(raw)
            terms[found.id] = found.terms()
    return terms


# -- change previews -------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewLine:
    description: str
    amount: int
    proration: bool

    def to_json(self, currency: str) -> dict[str, Any]:
        return {
            "description": self.description,
            "amount": {"amount": self.amount, "currency": currency},
            "proration": self.proration,
        }


@dataclass(frozen=True)
class ChangePreview:
    """What a change would invoice: `due_now` at once, `next_invoice` at the next renewal,
    and the plan's price per period from then on (`renewal`)."""

    plan: str
    interval: str
    seats: int
    currency: str
    timing: str  # now, period_end, nothing, checkout (no subscription yet)
    effective_at: datetime | None
    due_now: int
    proration: int
    next_invoice: int | None
    next_invoice_at: datetime | None
    renewal: int
    trial_days: int
    lines: list[PreviewLine] = field(default_factory=list)
    # A live subscription with no card on file (a trial started without one): the customer
    # adds one in the Customer Portal before the change can be charged.
    needs_payment_method: bool = False

    def to_json(self) -> dict[str, Any]:
        def money(amount: int | None) -> dict[str, Any] | None:
            return None if amount is None else {"amount": amount, "currency": self.currency}

        return {
            "plan": self.plan,
            "interval": self.interval,
            "seats": self.seats,
            "timing": self.timing,
            "effective_at": _iso(self.effective_at),
            "due_now": money(self.due_now),
            "proration": money(self.proration),
            "next_invoice": money(self.next_invoice),
            "next_invoice_at": _iso(self.next_invoice_at),
            "renewal": money(self.renewal),
            "trial_days": self.trial_days,
            "lines": [line.to_json(self.currency) for line in self.lines],
            "needs_payment_method": self.needs_payment_method,
        }


def preview_subscription_change(
    deps: Deps,
    *,
    customer_id: str,
    plan: str,
    interval: str,
    seats: int | None = None,
) -> ChangePreview:
    """Return what moving to `plan`/`interval`/`seats` would invoice, from Stripe's preview."""
    db, catalog, gateway, settings = deps.db, deps.catalog, deps.optional_stripe(), deps.settings
    customer, target = online_customer(db, catalog, gateway, customer_id)
    live = live_subscription(target, customer.stripe_id)
    if live is not None and live.currency:
        customer = replace(customer, currency=live.currency)
    terms = terms_for(catalog, customer, plan, interval, seats)
    renewal = terms.price.amount_minor * terms.quantity
    base = dict(
        plan=terms.plan.id,
        interval=terms.interval,
        seats=terms.quantity,
        currency=terms.currency,
        renewal=renewal,
    )
    if live is None or not is_live(live.status):
        # No subscription: Checkout starts one (after the trial, if the plan has one).
        days = terms.plan.trial_days
        return ChangePreview(
            **base,  # type: ignore[arg-type]
            timing="checkout",
            effective_at=None,
            due_now=0 if days else renewal,
            proration=0,
            next_invoice=renewal,
            next_invoice_at=None,
            trial_days=days,
        )
    current = live.base_item
    assert current is not None
    timing = change_timing(
        CurrentTerms(
            live.plan,
            live.interval,
            live.currency or "",
            current.quantity or 1,
            current_amount(catalog, live),
        ),
        terms,
        at_period_end=None,
    )
    card = _has_payment_method(target, customer.stripe_id, live.id)
    if timing is not ChangeTiming.NOW:
        return ChangePreview(
            needs_payment_method=not card and timing is ChangeTiming.PERIOD_END,
            **base,  # type: ignore[arg-type]
            timing=timing.value,
            effective_at=live.current_period_end,
            due_now=0,
            proration=0,
            next_invoice=renewal if timing is ChangeTiming.PERIOD_END else None,
            next_invoice_at=live.current_period_end,
            trial_days=0,
        )
    details = item_changes(target, live, terms)
    proration_behavior = settings.immediate_proration_behavior
    details["proration_behavior"] = proration_behavior
    invoice = target.preview_subscription_invoice(
        stripe_customer_id=customer.stripe_id, subscription_id=live.id, details=details
    )
    lines = [
        PreviewLine(
            str(line.get("description") or ""),
            int(line.get("amount") or 0),
            _is_proration(line),
        )
        for line in (invoice.get("lines") or {}).get("data", [])
    ]
    proration = sum(line.amount for line in lines if line.proration)
    total = int(invoice.get("total") or 0)
    invoiced_now = proration_behavior == "always_invoice"
    next_at = invoice.get("period_end") if not invoiced_now else None
    return ChangePreview(
        needs_payment_method=not card,
        **base,  # type: ignore[arg-type]
        timing="now",
        effective_at=None,
        due_now=total if invoiced_now else 0,
        proration=proration,
        next_invoice=None if invoiced_now else total,
        next_invoice_at=datetime.fromtimestamp(next_at, UTC)
        if next_at
        else live.current_period_end,
        trial_days=0,
        lines=lines,
    )


def _has_payment_method(gateway: StripeGateway, stripe_customer_id: str, sub_id: str) -> bool:
    """Return whether Stripe can charge the subscription: its own or the customer's default."""
    subscription = gateway.retrieve_subscription(sub_id)
    if subscription.get("default_payment_method") or subscription.get("default_source"):
        return True
    customer = gateway.retrieve_customer(stripe_customer_id)
    settings = customer.get("invoice_settings") or {}
    return bool(settings.get("default_payment_method") or customer.get("default_source"))


def _is_proration(line: dict[str, Any]) -> bool:
    parent = line.get("parent") or {}
    for key in ("subscription_item_details", "invoice_item_details"):
        details = parent.get(key) or {}
        if details.get("proration"):
            return True
    return bool(line.get("proration"))
