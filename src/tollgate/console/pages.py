"""The console's pages: sign-in, overview, customers, a customer and its actions, webhooks,
outbox, reconciliation, catalog, API keys and fees.

Every page needs a signed-in operator; every form carries its session's CSRF token; every
action is allowed by the operator's role (domain/operators.py) and audited under its name.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from tollgate.bootstrap import Container
from tollgate.config import Settings
from tollgate.console.deals import DEAL_ACTIONS, DEAL_DONE, run_deal_action
from tollgate.console.render import STATIC, render
from tollgate.domain.catalog import SeatPolicy
from tollgate.domain.errors import TollgateError
from tollgate.domain.operators import ROLES, Action
from tollgate.domain.reconcile import OBJECT_TYPES, parse_window
from tollgate.domain.subscriptions import is_live
from tollgate.services import console, console_actions, operators
from tollgate.services.api_keys import CreatedApiKey, create_api_key
from tollgate.services.catalog import diff_catalog
from tollgate.services.credits import grant_credits, list_credits
from tollgate.services.customers import get_customer, open_portal
from tollgate.services.deals import list_overrides
from tollgate.services.operators import ConsoleSession, NotAllowed
from tollgate.services.outbox import preview_email
from tollgate.services.reconcile import (
    get_reconciliation,
    list_drifts,
    recheck_object,
    run_reconcile,
)
from tollgate.services.subscriptions.canceling import cancel_subscription, resume_subscription
from tollgate.services.subscriptions.changing import SubscriptionRequest, change_subscription
from tollgate.services.subscriptions.reading import get_subscription
from tollgate.services.usage.controls import usage_controls
from tollgate.services.webhooks.inbox import STATUSES as EVENT_STATUSES
from tollgate.web.csrf import CsrfRefused, checked_form, csrf_token
from tollgate.web.security import content_security_policy
from tollgate_client.views import SubscriptionView

router = APIRouter(prefix="/console", include_in_schema=False)
COOKIE = "tg_console"
PRE_COOKIE = "tg_console_pre"  # the sign-in form's CSRF key, before a session exists


class SignInNeeded(Exception):
    """No live session: the browser goes to the sign-in page."""


class TollgateErrorPage(TollgateError):
    """A form's input the console refuses before any service sees it."""

    type = "invalid_request_error"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _app(request: Request) -> Container:
    return request.app.state.container


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def session_of(request: Request) -> ConsoleSession:
    """Return the signed-in operator's session, or raise SignInNeeded."""
    app = _app(request)
    found = operators.console_session(
        db=app.db, clock=app.clock, settings=app.settings, token=request.cookies.get(COOKIE)
    )
    if found is None:
        raise SignInNeeded()
    return found


async def acting(request: Request, action: Action) -> tuple[ConsoleSession, FormData]:
    """Return the session and posted form of an action the operator's role allows (CSRF and
    origin checked first)."""
    session = session_of(request)
    form = await checked_form(request, session.csrf_secret.encode(), session.id)
    session.require(action)
    return session, form


def _page(request: Request, template: str, session: ConsoleSession | None, **context: Any) -> Any:
    return render(request, template, settings=_app(request).settings, session=session, **context)


def _back(path: str, **params: str) -> RedirectResponse:
    query = f"?{urlencode(params)}" if params else ""
    return RedirectResponse(f"{path}{query}", status_code=303)


def _filters(**given: str | None) -> dict[str, str]:
    """The list filters a page was asked for (the empty ones left out), to carry to its links."""
    return {name: value for name, value in given.items() if value}


def _list_page(
    request: Request,
    session: ConsoleSession,
    nav: str,
    page: console.Page,
    kept: dict[str, str],
    done: str | None = None,
    **context: Any,
) -> Any:
    """Render the list page `console_<nav>.html`: a page of items, the filters it was asked
    for (kept in its form and its next-page link) and what was just done."""
    return _page(
        request,
        f"console_{nav}.html",
        session,
        page=page,
        form=kept,
        next_url=_next_url(f"/console/{nav}", kept, page),
        done=DONE.get(done or ""),
        nav=nav,
        **context,
    )


def _next_url(path: str, kept: dict[str, str], page: console.Page) -> str | None:
    """The link to a list's next page: its filters and the page's cursor; None on the last."""
    if not page.next_cursor:
        return None
    return f"{path}?{urlencode({**kept, 'cursor': page.next_cursor})}"


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _secret(form: FormData, name: str) -> str:
    """A password as typed (spaces are part of it)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


# -- signing in and out ----------------------------------------------------------------------


@router.get("/sign-in")
def sign_in_page(request: Request, error: str | None = None, done: str | None = None) -> Response:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "console_sign_in.html",
        settings=_app(request).settings,
        session=None,
        csrf=csrf_token(pre.encode(), "sign-in"),
        error=error,
        done=DONE.get(done or ""),
    )
    response.set_cookie(
        PRE_COOKIE,
        pre,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/console",
        max_age=3600,
    )
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    app = _app(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre:
        raise CsrfRefused("your browser sent no sign-in cookie; reload the page")
    form = await checked_form(request, pre.encode(), "sign-in")
    try:
        signed = operators.sign_in(
            db=app.db,
            clock=app.clock,
            settings=app.settings,
            name=_text(form, "name"),
            password=_secret(form, "password"),
            address=_address(request),
        )
    except (operators.SignInRefused, operators.TooManyAttempts) as refused:
        status = 429 if isinstance(refused, operators.TooManyAttempts) else 401
        return render(
            request,
            "console_sign_in.html",
            settings=app.settings,
            session=None,
            csrf=csrf_token(pre.encode(), "sign-in"),
            error=refused.message,
            status=status,
        )
    signed_in = RedirectResponse("/console", status_code=303)
    signed_in.set_cookie(
        COOKIE,
        signed.token,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/console",
        max_age=app.settings.console_session_hours * 3600,
    )
    signed_in.delete_cookie(PRE_COOKIE, path="/console")
    return signed_in


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = session_of(request)
    form = await checked_form(request, session.csrf_secret.encode(), session.id)
    app = _app(request)
    if _text(form, "everywhere") == "1":
        operators.sign_out_everywhere(
            db=app.db, clock=app.clock, operator=session.operator, actor=session.actor
        )
    else:
        operators.sign_out(db=app.db, token=request.cookies.get(COOKIE, ""))
    response = _back("/console/sign-in")
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- overview ----------------------------------------------------------------------------------


@router.get("")
def overview(request: Request) -> Response:
    session = session_of(request)
    app = _app(request)
    summary = console.summarize(app)
    return _page(request, "console_overview.html", session, summary=summary, nav="overview")


# -- customers ---------------------------------------------------------------------------------


@router.get("/customers")
def customers_page(
    request: Request,
    q: str | None = None,
    plan: str | None = None,
    status: str | None = None,
    currency: str | None = None,
    offline: str | None = None,
    over: str | None = None,
    trial_ends: str | None = None,
    since: str | None = None,
    ended_since: str | None = None,
    sort: str = "created",
    order: str = "desc",
    cursor: str | None = None,
) -> Response:
    session = session_of(request)
    app = _app(request)
    if trial_ends and not trial_ends.isdigit():
        raise TollgateErrorPage("trial_ends must be a number of days.")
    query = console.CustomerQuery(
        search=q or None,
        plan=plan or None,
        status=status or None,
        currency=currency or None,
        offline={"yes": True, "no": False}.get(offline or ""),
        over_percent=80 if over == "80" else None,
        trial_ends_within_days=int(trial_ends) if trial_ends else None,
        created_since=_day(since, "since"),
        ended_since=_day(ended_since, "ended_since"),
        sort=sort,
        order=order,
    )
    page = console.list_customers(app, query=query, cursor=cursor, limit=50)
    kept = {
        key: value
        for key, value in request.query_params.items()
        if key != "cursor" and value and key in CUSTOMER_FILTERS
    }
    return _list_page(
        request,
        session,
        "customers",
        page,
        kept,
        query=query,
        plans=sorted(app.catalog.plans),
        statuses=console.CUSTOMER_STATUSES,
        currencies=app.catalog.currencies,
        first_url=f"/console/customers?{urlencode(kept)}" if cursor else None,
    )


CUSTOMER_FILTERS = (
    "q",
    "plan",
    "status",
    "currency",
    "offline",
    "over",
    "trial_ends",
    "since",
    "ended_since",
    "sort",
    "order",
)


def _day(value: str | None, name: str) -> datetime | None:
    """A `YYYY-MM-DD` filter as the start of that UTC day."""
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        raise TollgateErrorPage(f"{name} must be a date, YYYY-MM-DD.") from None


@router.get("/customers/{customer_id}")
def customer_page(
    request: Request, customer_id: str, cursor: str | None = None, done: str | None = None
) -> Response:
    session = session_of(request)
    app = _app(request)
    customer = get_customer(app, customer_id=customer_id)
    subscription = get_subscription(app, customer_id=customer_id)
    facts = console_actions.billing_facts(db=app.db, customer_id=customer_id)
    granted = app.entitlements.entitlements(customer_id)
    decisions = [(granted.features[f], granted.decide(f)) for f in granted.features]
    ledger = list_credits(db=app.db, customer_id=customer_id, limit=20)
    timeline = console.customer_timeline(db=app.db, customer_id=customer_id, cursor=cursor)
    emails = console.list_outbox(db=app.db, kind="email", customer_id=customer_id, limit=20)
    stripe_base = "https://dashboard.stripe.com/" + ("" if app.settings.stripe_live else "test/")
    return _page(
        request,
        "console_customer.html",
        session,
        customer=customer,
        subscription=subscription,
        facts=facts,
        granted=granted,
        decisions=decisions,
        ledger=ledger,
        controls=usage_controls(app, customer_id=customer_id),
        timeline=timeline,
        emails=emails.items,
        stripe_base=stripe_base,
        plans=[p for p in app.catalog.plans.values()],
        seat_policy=_seat_policy(app, subscription),
        grant_key=secrets.token_hex(12),
        done=DONE.get(done or ""),
        nav="customers",
        overrides=list_overrides(db=app.db, customer_id=customer_id),
        features=list(app.catalog.features.values()),
    )


def _seat_policy(app: Container, subscription: SubscriptionView) -> SeatPolicy | None:
    """The bounds of the subscription's plan when it is priced per seat and live, else None."""
    plan = app.catalog.plans.get(subscription.plan or "")
    if plan is None or subscription.seats is None or not is_live(subscription.status):
        return None
    return plan.seats


DONE = {
    "plan": "The plan change was made.",
    "seats": "The seat count was changed.",
    "seats-later": "The seat count changes when the period ends.",
    "seats-kept": "The seat count stays: seats never go down (TOLLGATE_SEAT_CHANGE_BEHAVIOR).",
    "credits": "The credits were granted.",
    "cancel": "The subscription was canceled.",
    "resume": "The subscription was resumed.",
    "email": "The email will be sent again at the worker's next run.",
    "offline": "The customer is billed offline now.",
    "online": "The customer is billed through Stripe again.",
    "replayed": "The event was applied again.",
    "retried": "It will be sent again at the worker's next run.",
    "healed": "Reconciliation ran; what Stripe is the record for was healed.",
    "rechecked": "The object was compared with Stripe again; healed where Stripe is the record.",
    "revoked": "The key was revoked; servers refuse it within 10 seconds.",
    "role": "The role was changed; it holds from the operator's next page.",
    "operator-signed-out": "Every session of the operator was ended.",
    "operator-removed": "The operator was removed and signed out.",
    "password": "Your password was changed and every session of yours ended; sign in with it.",
    **DEAL_DONE,
    "spend-cap": "The spend cap was saved.",
    "add-alert": "The usage alert was added.",
    "remove-alert": "The usage alert was removed.",
}


@router.post("/customers/{customer_id}/actions/{action}")
async def customer_action(request: Request, customer_id: str, action: str) -> Response:
    session, form = await acting(request, "act_on_customers")
    app = _app(request)
    actor = session.actor
    here = f"/console/customers/{customer_id}"
    audit: dict[str, Any] = {}
    if action == "change-plan":
        plan, interval = _text(form, "plan"), _text(form, "interval") or "month"
        change_subscription(
            app, customer_id=customer_id, wanted=SubscriptionRequest(plan=plan, interval=interval)
        )
        audit = {"plan": plan, "interval": interval}
        done = "plan"
    elif action == "change-seats":
        seats_text = _text(form, "seats")
        if not seats_text.isdigit() or int(seats_text) <= 0:
            raise TollgateErrorPage("Seats must be a whole number above zero.")
        current = get_subscription(app, customer_id=customer_id)
        if current.plan is None or current.seats is None:
            raise TollgateErrorPage("The customer has no subscription priced per seat.")
        changed = change_subscription(
            app,
            customer_id=customer_id,
            wanted=SubscriptionRequest(
                plan=current.plan, interval=current.interval or "month", seats=int(seats_text)
            ),
        )
        audit = {"seats": int(seats_text), "was": current.seats}
        if changed.pending_change is not None:
            done = "seats-later"
        else:
            done = "seats" if changed.seats == int(seats_text) else "seats-kept"
    elif action == "grant-credits":
        amount_text = _text(form, "amount")
        if not amount_text.isdigit() or int(amount_text) <= 0:
            raise TollgateErrorPage("Credits must be a whole number above zero.")
        reason = _text(form, "reason") or "granted by support"
        grant_credits(
            app,
            customer_id=customer_id,
            amount=int(amount_text),
            reason=reason[:200],
            idempotency_key=f"console-{_text(form, 'key') or secrets.token_hex(12)}",
            actor=actor,
        )
        audit = {"credits": int(amount_text), "reason": reason[:200]}
        done = "credits"
    elif action == "cancel":
        at_end = _text(form, "when") != "now"
        cancel_subscription(app, customer_id=customer_id, at_period_end=at_end)
        audit = {"at_period_end": at_end}
        done = "cancel"
    elif action == "resume":
        resume_subscription(app, customer_id=customer_id)
        done = "resume"
    elif action == "portal":
        url = open_portal(
            app,
            customer_id=customer_id,
            return_url=str(request.url_for("customer_page", customer_id=customer_id)),
        )
        console_actions.record_operator_action(
            db=app.db, clock=app.clock, actor=actor, customer_id=customer_id, action="open_portal"
        )
        return RedirectResponse(url, status_code=303)
    elif action == "resend-email":
        email = _text(form, "email")
        if not email.isdigit():
            raise TollgateErrorPage("Choose an email to send again.")
        console_actions.resend_email(
            db=app.db,
            clock=app.clock,
            actor=actor,
            customer_id=customer_id,
            notification_id=int(email),
        )
        return _back(here, done="email")
    elif action in ("mark-offline", "mark-online"):
        console_actions.mark_offline(
            app, actor=actor, customer_id=customer_id, offline=action == "mark-offline"
        )
        app.forget_decisions([customer_id])
        return _back(here, done="offline" if action == "mark-offline" else "online")
    elif action in DEAL_ACTIONS:
        done, audit = run_deal_action(
            app=app, actor=actor, customer_id=customer_id, action=action, form=form
        )
    else:
        raise TollgateErrorPage("There is no such action.", status=404)
    app.forget_decisions([customer_id])
    console_actions.record_operator_action(
        db=app.db,
        clock=app.clock,
        actor=actor,
        customer_id=customer_id,
        action=action.replace("-", "_"),
        details=audit or None,
    )
    return _back(here, done=done)


# -- webhooks ------------------------------------------------------------------------------------


@router.get("/webhooks")
def webhooks_page(
    request: Request,
    status: str | None = None,
    type: str | None = None,
    customer: str | None = None,
    cursor: str | None = None,
    done: str | None = None,
) -> Response:
    session = session_of(request)
    app = _app(request)
    kept = _filters(status=status, type=type, customer=customer)
    page = console.list_events(
        db=app.db,
        status=kept.get("status"),
        type_=kept.get("type"),
        customer_id=kept.get("customer"),
        cursor=cursor,
        limit=50,
    )
    return _list_page(request, session, "webhooks", page, kept, done, statuses=EVENT_STATUSES)


@router.get("/webhooks/{event_id}")
def webhook_page(request: Request, event_id: str, done: str | None = None) -> Response:
    session = session_of(request)
    app = _app(request)
    detail = console.get_event(db=app.db, event_id=event_id)
    raw = orjson.dumps(detail.payload, option=orjson.OPT_INDENT_2).decode()
    return _page(
        request,
        "console_webhook.html",
        session,
        event=detail.event,
        raw=raw,
        done=DONE.get(done or ""),
        nav="webhooks",
    )


@router.post("/webhooks/{event_id}/replay")
async def replay_webhook(request: Request, event_id: str) -> Response:
    await acting(request, "act_on_customers")
    app = _app(request)
    console.get_event(db=app.db, event_id=event_id)
    console_actions.replay_event(app, event_id=event_id)
    return _back(f"/console/webhooks/{event_id}", done="replayed")


@router.post("/webhooks-replay-failed")
async def replay_failed_webhooks(request: Request) -> Response:
    await acting(request, "act_on_customers")
    app = _app(request)
    for event_id in console.failed_event_ids(db=app.db):
        console_actions.replay_event(app, event_id=event_id)
    return _back("/console/webhooks", done="replayed")


# -- outbox ------------------------------------------------------------------------------------


@router.get("/outbox")
def outbox_page(
    request: Request,
    kind: str | None = None,
    status: str | None = None,
    customer: str | None = None,
    cursor: str | None = None,
    done: str | None = None,
) -> Response:
    session = session_of(request)
    app = _app(request)
    kept = _filters(kind=kind, status=status, customer=customer)
    page = console.list_outbox(
        db=app.db,
        kind=kept.get("kind"),
        status=kept.get("status"),
        customer_id=kept.get("customer"),
        cursor=cursor,
        limit=50,
    )
    return _list_page(
        request,
        session,
        "outbox",
        page,
        kept,
        done,
        kinds=console.OUTBOX_KINDS,
        statuses=console.OUTBOX_STATUSES,
    )


@router.get("/outbox/email_{number}")
def email_page(request: Request, number: int) -> Response:
    session = session_of(request)
    app = _app(request)
    item = console.get_outbox_item(db=app.db, outbox_id=f"email_{number}")
    rendered = preview_email(
        app, template=item.name, customer_id=item.customer_id, notification_id=number
    )
    page = _page(request, "console_email.html", session, item=item, mail=rendered, nav="outbox")
    # The HTML part shows in a sandboxed frame (`srcdoc`, `sandbox=""`: no script, no form, no
    # top navigation, an opaque origin). A srcdoc frame keeps this page's CSP, so this page alone
    # also allows the inline styles emails are written with.
    page.headers["Content-Security-Policy"] = _email_page_csp(app.settings)
    return page


def _email_page_csp(settings: Settings) -> str:
    return content_security_policy(settings).replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'"
    )


@router.post("/outbox/{outbox_id}/retry")
async def retry_outbox(request: Request, outbox_id: str) -> Response:
    await acting(request, "act_on_customers")
    app = _app(request)
    console.retry_outbox_item(db=app.db, clock=app.clock, outbox_id=outbox_id)
    return _back("/console/outbox", done="retried")


# -- reconciliation ------------------------------------------------------------------------------


@router.get("/reconciliation")
def reconciliation_page(
    request: Request, cursor: str | None = None, done: str | None = None
) -> Response:
    session = session_of(request)
    app = _app(request)
    page = console.list_reconciliations(db=app.db, cursor=cursor, limit=20)
    return _list_page(request, session, "reconciliation", page, {}, done, windows=RECONCILE_WINDOWS)


@router.get("/reconciliation/{run_id}")
def reconciliation_run_page(request: Request, run_id: int, done: str | None = None) -> Response:
    session = session_of(request)
    app = _app(request)
    report = get_reconciliation(db=app.db, run_id=run_id)
    drifts = list(list_drifts(db=app.db, run_id=run_id, limit=500))
    return _page(
        request,
        "console_reconciliation_run.html",
        session,
        report=report,
        drifts=drifts,
        rechecked_types=OBJECT_TYPES,
        done=DONE.get(done or ""),
        nav="reconciliation",
    )


# The windows "heal from the page" offers, as `tollgate reconcile --since` takes them.
RECONCILE_WINDOWS = (
    ("24h", "the last 24 hours"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("date", "since a date"),
)


@router.post("/reconciliation/run")
async def run_reconciliation(request: Request) -> Response:
    _, form = await acting(request, "administer")
    app = _app(request)
    window = _text(form, "window") or "24h"
    if window not in dict(RECONCILE_WINDOWS):
        raise TollgateErrorPage("Choose a window: 24 hours, 7 days, 30 days or since a date.")
    text = _text(form, "since_date") if window == "date" else window
    if window == "date" and not text:
        raise TollgateErrorPage("Give the date the window starts, or choose another window.")
    try:
        since = parse_window(text, app.clock.now())
    except ValueError as error:
        raise TollgateErrorPage(f"The window: {error}.") from None
    report = run_reconcile(app, since=since, trigger="console")
    return _back(f"/console/reconciliation/{report.run_id}", done="healed")


@router.post("/reconciliation/recheck")
async def recheck_drift(request: Request) -> Response:
    """Check one drift's object against Stripe again (and heal it), as a run of its own."""
    _, form = await acting(request, "administer")
    app = _app(request)
    object_id = _text(form, "object_id")
    if not object_id:
        raise TollgateErrorPage("Give the Stripe id of the object to check, e.g. sub_….")
    report = recheck_object(
        app,
        object_id=object_id,
        object_type=_text(form, "object_type") or None,
        account=_text(form, "account") or None,
    )
    return _back(f"/console/reconciliation/{report.run_id}", done="rechecked")


# -- catalog, API keys, fees -----------------------------------------------------------------


@router.get("/catalog")
def catalog_page(request: Request) -> Response:
    session = session_of(request)
    app = _app(request)
    gateway = app.optional_stripe()
    changes: list[str] | None = None
    diff_error = None
    if gateway is not None:
        try:
            changes = [
                change.describe() for change in diff_catalog(catalog=app.catalog, gateway=gateway)
            ]
        except Exception as error:  # Stripe unreachable: the page still shows the catalog
            diff_error = f"{type(error).__name__}: could not read Stripe's catalog"
            del error
    return _page(
        request,
        "console_catalog.html",
        session,
        catalog=app.catalog,
        changes=changes,
        diff_error=diff_error,
        nav="catalog",
    )


@router.get("/api-keys")
def api_keys_page(request: Request, done: str | None = None) -> Response:
    return _api_keys_page(request, session_of(request), done=DONE.get(done or ""))


@router.post("/api-keys")
async def create_key(request: Request) -> Response:
    session, form = await acting(request, "administer")
    app = _app(request)
    created = create_api_key(
        db=app.db, clock=app.clock, name=_text(form, "name"), scope=_text(form, "scope")
    )
    return _api_keys_page(request, session, created=created)


def _api_keys_page(
    request: Request,
    session: ConsoleSession,
    *,
    created: CreatedApiKey | None = None,
    done: str | None = None,
) -> Any:
    """The API keys page: every key, and the secret of the one just created (shown once)."""
    keys = console.list_api_keys(db=_app(request).db)
    return _page(
        request,
        "console_api_keys.html",
        session,
        keys=keys,
        created=created,
        done=done,
        nav="api-keys",
    )


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    await acting(request, "administer")
    app = _app(request)
    console.revoke_api_key(
        db=app.db, clock=app.clock, authenticator=app.authenticator, key_id=key_id
    )
    return _back("/console/api-keys", done="revoked")


# -- operators -----------------------------------------------------------------------------------


@router.get("/operators")
def operators_page(request: Request, done: str | None = None) -> Response:
    return _operators_page(request, session_of(request), done=DONE.get(done or ""))


@router.post("/operators")
async def add_operator(request: Request) -> Response:
    session, form = await acting(request, "administer")
    app = _app(request)
    added = operators.add_operator(
        db=app.db,
        clock=app.clock,
        name=_text(form, "name"),
        role=_text(form, "role"),
        actor=session.actor,
    )
    return _operators_page(request, session, added=added)


def _operators_page(
    request: Request,
    session: ConsoleSession,
    *,
    added: operators.AddedOperator | None = None,
    done: str | None = None,
) -> Any:
    """The operators page: who signs in, with what role and sessions; the password of the one
    just added (shown once)."""
    app = _app(request)
    found = operators.operators_with_sessions(db=app.db, clock=app.clock, settings=app.settings)
    return _page(
        request,
        "console_operators.html",
        session,
        operators=found,
        roles=ROLES,
        added=added,
        done=done,
        nav="operators",
    )


@router.post("/operators/{name}/role")
async def change_operator_role(request: Request, name: str) -> Response:
    session, form = await acting(request, "administer")
    app = _app(request)
    operators.set_operator_role(
        db=app.db, clock=app.clock, name=name, role=_text(form, "role"), actor=session.actor
    )
    return _back("/console/operators", done="role")


@router.post("/operators/{name}/sign-out")
async def sign_operator_out(request: Request, name: str) -> Response:
    session, _ = await acting(request, "administer")
    app = _app(request)
    operators.sign_out_everywhere(db=app.db, clock=app.clock, operator=name, actor=session.actor)
    return _back("/console/operators", done="operator-signed-out")


@router.post("/operators/{name}/remove")
async def remove_operator(request: Request, name: str) -> Response:
    session, _ = await acting(request, "administer")
    app = _app(request)
    operators.remove_operator(db=app.db, clock=app.clock, name=name, actor=session.actor)
    return _back("/console/operators", done="operator-removed")


@router.post("/password")
async def change_password(request: Request) -> Response:
    session, form = await acting(request, "view")
    app = _app(request)
    operators.change_own_password(
        db=app.db,
        clock=app.clock,
        name=session.operator,
        current=_secret(form, "current_password"),
        new=_secret(form, "new_password"),
        repeated=_secret(form, "repeat_password"),
    )
    response = _back("/console/sign-in", done="password")
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/fees")
def fees_page(request: Request) -> Response:
    session = session_of(request)
    app = _app(request)
    report = console.payment_fees(db=app.db, clock=app.clock, settings=app.settings)
    return _page(request, "console_fees.html", session, report=report, nav="fees")


@router.get("/static/console.css")
def stylesheet() -> Response:
    return FileResponse(
        STATIC / "console.css",
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# -- mounting --------------------------------------------------------------------------------


def _error_page(status: int, title: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, error: Exception) -> Response:
        try:
            session: ConsoleSession | None = session_of(request)
        except SignInNeeded:
            session = None
        message = getattr(error, "message", None) or str(error)
        code = int(getattr(error, "status", 0) or status)
        return render(
            request,
            "console_message.html",
            settings=_app(request).settings,
            session=session,
            status=code,
            title=title if code != 404 else "Not found",
            message=message,
        )

    return handle


def install_console(app: FastAPI) -> None:
    """Serve the console under /console on `app`."""
    app.include_router(router)
    previous_tollgate = app.exception_handlers.get(TollgateError)
    refused = _error_page(403, "Refused")
    failed = _error_page(400, "That did not work")

    async def on_sign_in_needed(request: Request, error: Exception) -> Response:
        if request.method == "GET":
            return _back("/console/sign-in")
        return await refused(request, CsrfRefused("sign in again; your session ended"))

    async def on_tollgate_error(request: Request, error: Exception) -> Response:
        if request.url.path.startswith("/console"):
            if isinstance(error, NotAllowed):
                return await refused(request, error)
            return await failed(request, error)
        assert previous_tollgate is not None
        return await previous_tollgate(request, error)  # type: ignore[misc]

    previous_csrf = app.exception_handlers.get(CsrfRefused)

    async def on_csrf(request: Request, error: Exception) -> Response:
        if request.url.path.startswith("/console") or previous_csrf is None:
            return await refused(request, error)
        return await previous_csrf(request, error)  # type: ignore[misc]

    app.add_exception_handler(SignInNeeded, on_sign_in_needed)
    app.add_exception_handler(TollgateError, on_tollgate_error)
    app.add_exception_handler(CsrfRefused, on_csrf)
