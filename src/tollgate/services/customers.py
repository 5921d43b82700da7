"""Customers: create the app's organisation as a billing customer, read it, change it, portal.

The local row is written before Stripe is asked for anything, so a customer Stripe reports in a
webhook before this service hears back is linked to the same row, never made twice. A Stripe
customer is created with an idempotency key derived from the app's id, so a retried request
(after a timeout, or a 5xx) finds the one Stripe made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tollgate.clock import Clock
from tollgate.config import ConfigError, Settings
from tollgate.db.models import Customer, PlanChange, Subscription
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError
from tollgate.domain.events import ENDED_STATUSES, SubscriptionSnapshot
from tollgate.domain.subscriptions import (
    check_metadata,
    customer_currency,
    find_plan,
    fingerprint,
    is_live,
    plan_of,
    request_id,
)
from tollgate.domain.tax import check_tax_exempt, check_tax_ids
from tollgate.money import normalize_currency
from tollgate.services.catalog import sync_catalog
from tollgate.services.credit_ledger import forget_credits, grant_onboarding_credits
from tollgate.services.customer_tax import change_tax_ids, tax_ids_of
from tollgate.services.deps import Deps
from tollgate.stripe.errors import StripeFailure, StripeUnavailable
from tollgate.stripe.gateway import StripeGateway
from tollgate.stripe.translate import subscription_snapshot
from tollgate_client.views import CustomerView

CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,254}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
ADDRESS_KEYS = ("line1", "line2", "city", "state", "postal_code", "country")
APP_ID_KEY = "tollgate_customer_id"
ONBOARDING = "onboarding"


class CustomerNotInStripe(TollgateError):
    """The customer's Stripe customer was not made yet (Stripe failed while creating it)."""

    type = "customer_not_in_stripe"
    status = 409


# -- what the services return ----------------------------------------------------------------


@dataclass(frozen=True)
class CreatedCustomer:
    """The customer, and whether this request made it (False: a repeat of the same request)."""

    customer: CustomerView
    created: bool


@dataclass(frozen=True)
class NewCustomer:
    """What the app asks for when its organisation signs up."""

    id: str
    email: str
    name: str | None = None
    metadata: Mapping[str, Any] | None = None
    offline: bool = False
    plan: str | None = None
    currency: str | None = None
    stripe_account: str | None = None
    address: Mapping[str, Any] | None = None
    test_clock: str | None = None


@dataclass(frozen=True)
class CustomerChanges:
    """A PATCH: None leaves a field alone; a metadata value of None or "" removes the key."""

    email: str | None = None
    name: str | None = None
    address: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    tax_exempt: str | None = None
    tax_ids: Sequence[Mapping[str, Any]] | None = None  # the whole set
    fields: frozenset[str] = field(default_factory=frozenset)


# -- reading ---------------------------------------------------------------------------------


def load_customer(session: Session, customer_id: str, *, lock: bool = False) -> Customer:
    """Return the customer's row, or raise NotFound."""
    row = session.get(Customer, customer_id, with_for_update=lock)
    if row is None or row.deleted:
        raise NotFound(f"no customer {customer_id!r}", param="id")
    return row


def current_subscription(session: Session, customer_id: str) -> Subscription | None:
    """Return the mirrored subscription that holds the customer's plan: live first, newest."""
    live_first = case((Subscription.status.in_(sorted(ENDED_STATUSES)), 1), else_=0)
    return session.scalars(
        select(Subscription)
        .where(Subscription.customer_id == customer_id)
        .order_by(live_first, Subscription.created_at.desc(), Subscription.id.desc())
        .limit(1)
    ).first()


def billing_currency(session: Session, customer: Customer, catalog: Catalog) -> str:
    """Return the currency the customer is billed in: the one a subscription fixed, else the
    one it asked for, else the catalog's."""
    currency, _ = customer_currency(
        fixed=first_currency(session, customer),
        requested=customer.requested_currency,
        catalog_currency=catalog.currency,
    )
    return currency


def first_currency(session: Session, customer: Customer) -> str | None:
    """Return the currency a subscription fixed for the customer, if any did."""
    if customer.currency:
        return customer.currency
    return session.scalars(
        select(Subscription.currency)
        .where(Subscription.customer_id == customer.id, Subscription.currency.is_not(None))
        .order_by(Subscription.created_at, Subscription.id)
        .limit(1)
    ).first()


def customer_view(session: Session, customer: Customer, catalog: Catalog) -> CustomerView:
    """Return the customer as the API shows it, from its row and its mirrored subscription."""
    subscription = current_subscription(session, customer.id)
    derived = plan_of(customer, subscription, catalog.default_plan)
    currency = billing_currency(session, customer, catalog)
    metadata = {
        key: str(value) for key, value in (customer.metadata_ or {}).items() if key != APP_ID_KEY
    }
    return CustomerView(
        id=customer.id,
        email=customer.email,
        name=customer.name,
        stripe_customer_id=customer.stripe_customer_id,
        offline=customer.offline,
        currency=currency,
        plan=derived.plan,
        status=derived.status,
        metadata=metadata,
        created=customer.created_at,
        address=customer.address,
        stripe_account=customer.stripe_account,
        plan_version=shown_plan_version(catalog, derived.plan, subscription),
        tax_exempt=customer.tax_exempt or "none",
        tax_ids=tax_ids_of(session, customer.id),
    )


def shown_plan_version(catalog: Catalog, plan: str | None, subscription: Any) -> int | None:
    """Return the version of `plan` a customer is on: its live subscription's, else the newest."""
    if plan is None:
        return None
    if (
        subscription is not None
        and subscription.status not in ENDED_STATUSES
        and subscription.plan == plan
    ):
        return int(subscription.plan_version or 1)
    known = catalog.plans.get(plan)
    return known.version if known is not None else None


def get_customer(deps: Deps, *, customer_id: str) -> CustomerView:
    """Return the customer, with its plan and status."""
    with deps.db.transaction() as session:
        return customer_view(session, load_customer(session, customer_id), deps.catalog)


# -- creating --------------------------------------------------------------------------------


def create_customer(deps: Deps, *, new: NewCustomer) -> CreatedCustomer:
    """Create the billing customer for the app's organisation, once per id.

    The same request again answers the same customer (and finishes its Stripe customer if a
    Stripe failure stopped the first one); different details under the same id are a Conflict.
    """
    db, catalog, settings, clock = deps.db, deps.catalog, deps.settings, deps.clock
    gateway = deps.optional_stripe()
    values = _check_new_customer(new, catalog, settings, gateway)
    digest = fingerprint(values)
    created = _insert_customer(db, settings, clock, new, values, digest)
    if not new.offline:
        assert gateway is not None  # checked with the input
        _make_stripe_customer(db, catalog, gateway, clock, new, values, created)
    with db.transaction() as session:
        return CreatedCustomer(
            customer_view(session, load_customer(session, new.id), catalog), created
        )


def _check_new_customer(
    new: NewCustomer, catalog: Catalog, settings: Settings, gateway: StripeGateway | None
) -> dict[str, Any]:
    """Return the request's normalized content, or raise InvalidRequest naming the field."""
    if not isinstance(new.id, str) or not CUSTOMER_ID.fullmatch(new.id):
        raise InvalidRequest(
            "id must be 1 to 255 letters, digits or _ . : @ -, starting with a letter or digit",
            param="id",
        )
    email = _check_email(new.email)
    name = _check_name(new.name)
    metadata = check_metadata(new.metadata)
    address = _check_address(new.address)
    currency = None
    if new.currency is not None:
        try:
            currency = normalize_currency(new.currency)
        except ValueError as error:
            raise InvalidRequest(str(error), param="currency") from None
        if currency not in catalog.currencies:
            raise InvalidRequest(
                f"the catalog has no prices in {currency}; "
                f"it prices plans in {', '.join(catalog.currencies)}",
                param="currency",
            )
    plan = None
    if new.plan is not None:
        chosen = find_plan(catalog, new.plan)
        if not new.offline and not chosen.is_free:
            raise InvalidRequest(
                f"plan {chosen.id!r} is paid: start it with POST /v1/customers/{{id}}/checkout "
                "or PUT /v1/customers/{id}/subscription (only offline customers are given a "
                "paid plan directly)",
                param="plan",
            )
        plan = chosen.id
    if new.offline:
        for param, value in (
            ("stripe_account", new.stripe_account),
            ("test_clock", new.test_clock),
        ):
            if value:
                raise InvalidRequest(
                    f"an offline customer has no Stripe objects, so it takes no {param}",
                    param=param,
                )
    else:
        if gateway is None:
            raise ConfigError(
                "STRIPE_SECRET_KEY: required to create customers in Stripe "
                "(or create the customer with offline: true)"
            )
        if new.stripe_account is not None and not re.fullmatch(
            r"acct_[A-Za-z0-9]{1,250}", new.stripe_account
        ):
            raise InvalidRequest(
                f"{new.stripe_account!r} is not a Stripe account id (acct_…)",
                param="stripe_account",
            )
        if new.test_clock is not None:
            if settings.stripe_live:
                raise InvalidRequest(
                    "test clocks exist only in Stripe's test mode", param="test_clock"
                )
            if not re.fullmatch(r"clock_[A-Za-z0-9]{1,250}", new.test_clock):
                raise InvalidRequest(
                    f"{new.test_clock!r} is not a test clock id (clock_…)", param="test_clock"
                )
    return {
        "id": new.id,
        "email": email,
        "name": name,
        "metadata": metadata,
        "offline": bool(new.offline),
        "plan": plan,
        "currency": currency,
        "stripe_account": new.stripe_account,
        "address": address,
        # A platform customer joins the default test clock, if one is set (`tollgate dev`).
        "test_clock": new.test_clock
        or (None if new.offline or new.stripe_account else settings.stripe_test_clock),
    }


def _check_email(email: Any) -> str:
    if not isinstance(email, str) or len(email) > 320 or not EMAIL.fullmatch(email.strip()):
        raise InvalidRequest(
            "email must be an email address such as billing@acme.example", param="email"
        )
    return email.strip()


def _check_name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > 255:
        raise InvalidRequest("name must be text of at most 255 characters", param="name")
    return name.strip() or None


def _check_address(address: Mapping[str, Any] | None) -> dict[str, str] | None:
    if address is None:
        return None
    clean: dict[str, str] = {}
    for key, value in address.items():
        if key not in ADDRESS_KEYS:
            raise InvalidRequest(
                f"address has no field {key!r} (fields are: {', '.join(ADDRESS_KEYS)})",
                param=f"address.{key}",
            )
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 200:
            raise InvalidRequest(
                f"address.{key} must be text of at most 200 characters", param=f"address.{key}"
            )
        clean[key] = value.strip()
    country = clean.get("country")
    if country is not None:
        if not re.fullmatch(r"[A-Za-z]{2}", country):
            raise InvalidRequest(
                "address.country must be a two-letter ISO 3166 code such as US or DE",
                param="address.country",
            )
        clean["country"] = country.upper()
    return clean


def _insert_customer(
    db: Database,
    settings: Settings,
    clock: Clock,
    new: NewCustomer,
    values: dict[str, Any],
    digest: str,
) -> bool:
    """Insert the customer's row (and its onboarding credits); False if this request made it."""
    now = clock.now()
    try:
        with db.write_transaction() as session:
            existing = session.get(Customer, new.id, with_for_update=True)
            if existing is not None:
                _check_repeat(existing, digest)
                return False
            session.add(
                Customer(
                    id=new.id,
                    stripe_customer_id=None,
                    email=values["email"],
                    name=values["name"],
                    currency=None,
                    offline=values["offline"],
                    stripe_account=values["stripe_account"],
                    metadata_=values["metadata"],
                    deleted=False,
                    state_version=0,
                    created_at=now,
                    updated_at=now,
                    plan=values["plan"],
                    requested_currency=values["currency"],
                    address=values["address"],
                    creation_fingerprint=digest,
                )
            )
            session.flush()
            grant_onboarding_credits(
                session.connection(), customer_id=new.id, settings=settings, now=now
            )
            return True
    except IntegrityError:
        # The same id was inserted by a concurrent request (or a webhook) a moment ago.
        with db.transaction() as session:
            _check_repeat(load_customer(session, new.id), digest)
        return False


def _check_repeat(existing: Customer, digest: str) -> None:
    if existing.creation_fingerprint != digest:
        raise Conflict(
            f"customer {existing.id!r} already exists with other details; "
            "change it with PATCH /v1/customers/{id}",
            param="id",
        )


def _make_stripe_customer(
    db: Database,
    catalog: Catalog,
    gateway: StripeGateway,
    clock: Clock,
    new: NewCustomer,
    values: dict[str, Any],
    created: bool,
) -> None:
    """Create the Stripe customer (once: keyed by the app's id) and link it to the row."""
    with db.transaction() as session:
        if load_customer(session, new.id).stripe_customer_id:
            return
    target = gateway.for_account(new.stripe_account) if new.stripe_account else gateway
    try:
        if new.stripe_account:
            # Subscriptions on a connected account use prices that live in that account.
            sync_catalog(catalog=catalog, gateway=target)
        stripe_id = target.create_customer(
            customer_id=new.id,
            email=values["email"],
            name=values["name"],
            metadata=values["metadata"],
            address=values["address"],
            test_clock=values["test_clock"],
        )
    except StripeUnavailable:
        raise  # the row stays: the same request again finishes the Stripe customer
    except StripeFailure as error:
        if created:
            _forget_customer(db, new.id)
        raise _as_bad_input(error) from error
    except BaseException:
        # Anything else (a bug, a value the SDK could not send) must not leave a row with no
        # Stripe customer that only this exact request could finish: a retry starts afresh.
        if created:
            _forget_customer(db, new.id)
        raise
    with db.write_transaction() as session:
        row = load_customer(session, new.id, lock=True)
        if row.stripe_customer_id is None:
            row.stripe_customer_id = stripe_id
            row.updated_at = clock.now()


def _forget_customer(db: Database, customer_id: str) -> None:
    """Remove a row whose Stripe customer Stripe refused to make (bad input changes nothing)."""
    with db.write_transaction() as session:
        row = session.get(Customer, customer_id, with_for_update=True)
        if row is None or row.stripe_customer_id is not None:
            return
        forget_credits(session.connection(), customer_id)
        session.flush()
        session.delete(row)


def _as_bad_input(error: StripeFailure) -> TollgateError:
    """Return Stripe's refusal of what the app sent as a 400 naming the field."""
    if error.code == "account_invalid":
        return InvalidRequest(
            f"Stripe has no connected account by that id (or it revoked access): {error.message}",
            param="stripe_account",
        )
    if error.param == "test_clock":
        return InvalidRequest(f"Stripe has no such test clock: {error.message}", param="test_clock")
    return error


# -- changing --------------------------------------------------------------------------------


def update_customer(
    deps: Deps,
    *,
    customer_id: str,
    changes: CustomerChanges,
    idempotency_key: str | None = None,
) -> CustomerView:
    """Change the customer's email, name, address, metadata, tax status or tax IDs, in Stripe
    and in Tollgate."""
    email = _check_email(changes.email) if changes.email is not None else None
    tax_exempt = check_tax_exempt(changes.tax_exempt) if changes.tax_exempt is not None else None
    tax_ids = check_tax_ids(changes.tax_ids) if changes.tax_ids is not None else None
    name = _check_name(changes.name) if "name" in changes.fields else None
    address = _check_address(changes.address) if changes.address is not None else None
    removed = {
        key for key, value in (changes.metadata or {}).items() if value is None or value == ""
    }
    kept = check_metadata(
        {key: value for key, value in (changes.metadata or {}).items() if key not in removed}
    )
    with deps.db.transaction() as session:
        row = load_customer(session, customer_id)
        metadata = None
        if changes.metadata is not None:
            stored = {k: v for k, v in (row.metadata_ or {}).items() if k != APP_ID_KEY}
            metadata = {k: v for k, v in {**stored, **kept}.items() if k not in removed}
        in_stripe = None if row.offline else stripe_customer(row, deps.optional_stripe())
        last_change = row.updated_at
    if in_stripe is None and tax_ids is not None:
        raise InvalidRequest(
            f"customer {customer_id!r} is offline (billed by hand): Stripe keeps tax IDs",
            param="tax_ids",
        )
    if in_stripe is not None:
        stripe_id, target = in_stripe
        stripe_name = (name or "") if "name" in changes.fields else None
        stripe_metadata = {**kept, **dict.fromkeys(removed, "")} if changes.metadata else None
        asked = {
            "email": email,
            "name": stripe_name,
            "address": address,
            "metadata": stripe_metadata,
            "tax_exempt": tax_exempt,
            "tax_ids": [(entry.type, entry.value) for entry in tax_ids or []],
        }
        key = f"customer-update-{customer_id}-" + request_id(
            idempotency_key, asked, stripe_id, last_change
        )
        if tax_ids is not None:
            # First, as Stripe may refuse a value: then nothing else is changed.
            change_tax_ids(
                db=deps.db,
                clock=deps.clock,
                customer_id=customer_id,
                target=target,
                stripe_customer_id=stripe_id,
                wanted=tax_ids,
                key_prefix=key,
            )
        target.update_customer(
            stripe_id,
            idempotency_key=key,
            email=email,
            name=stripe_name,
            address=address,
            metadata=stripe_metadata,
            tax_exempt=tax_exempt,
        )
    with deps.db.write_transaction() as session:
        row = load_customer(session, customer_id, lock=True)
        if email is not None:
            row.email = email
        if "name" in changes.fields:
            row.name = name
        if address is not None:
            row.address = address
        if tax_exempt is not None:
            row.tax_exempt = tax_exempt
        if metadata is not None:
            stamp = {APP_ID_KEY: customer_id} if not row.offline else {}
            row.metadata_ = {**metadata, **stamp}
        row.updated_at = deps.clock.now()
        return customer_view(session, row, deps.catalog)


# -- the portal ------------------------------------------------------------------------------


def open_portal(
    deps: Deps,
    *,
    customer_id: str,
    return_url: str,
    idempotency_key: str | None = None,
    configuration: Callable[[StripeGateway], str] | None = None,
) -> str:
    """Return a Customer Portal URL where the customer manages its card, invoices and plan.

    `configuration` gives the Portal configuration to use on the customer's account (issue 20:
    the one following the catalog); None uses the account's default.
    """
    check_url(return_url, "return_url")
    with deps.db.transaction() as session:
        row = load_customer(session, customer_id)
        stripe_id, target = stripe_customer(row, deps.optional_stripe())
        version = row.state_version
    key = request_id(idempotency_key, {"return_url": return_url}, version)
    return target.open_portal_session(
        idempotency_key=f"portal-create-{customer_id}-{key}",
        stripe_customer_id=stripe_id,
        return_url=return_url,
        configuration=configuration(target) if configuration is not None else None,
    )


def stripe_customer(row: Customer, gateway: StripeGateway | None) -> tuple[str, StripeGateway]:
    """Return the customer's Stripe id and the gateway acting on its Stripe account (a connected
    one, or the platform's), refusing offline customers."""
    if row.offline:
        raise InvalidRequest(
            f"customer {row.id!r} is offline (billed by hand): it has no Stripe customer",
            param="id",
        )
    if gateway is None:
        raise ConfigError("STRIPE_SECRET_KEY: required to reach Stripe for this customer")
    if row.stripe_customer_id is None:
        raise CustomerNotInStripe(
            f"customer {row.id!r} has no Stripe customer yet; "
            "repeat the POST /v1/customers that created it"
        )
    account = row.stripe_account
    return row.stripe_customer_id, gateway.for_account(account) if account else gateway


def live_subscription(
    gateway: StripeGateway, stripe_customer_id: str
) -> SubscriptionSnapshot | None:
    """Return the customer's newest live subscription that carries a Tollgate plan, from Stripe."""
    candidates = []
    for raw in gateway.list_subscriptions(stripe_customer_id):
        snapshot = subscription_snapshot(raw)
        if is_live(snapshot.status) and snapshot.plan is not None:
            candidates.append((int(raw.get("created") or 0), snapshot.id, snapshot))
    if not candidates:
        return None
    return max(candidates, key=lambda found: (found[0], found[1]))[2]


def check_url(url: Any, param: str) -> str:
    """Return an absolute http(s) URL, or raise InvalidRequest."""
    if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url) or len(url) > 2048:
        raise InvalidRequest(f"{param} must be an absolute http(s) URL", param=param)
    return url


def pending_plan_change(session: Session, customer_id: str) -> PlanChange | None:
    """Return the customer's plan change waiting for its period end, if any."""
    return session.scalars(
        select(PlanChange)
        .where(PlanChange.customer_id == customer_id, PlanChange.status == "pending")
        .order_by(PlanChange.created_at.desc())
        .limit(1)
    ).first()
