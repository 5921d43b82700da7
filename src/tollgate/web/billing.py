"""The customer's pages: the billing page, its actions, the pricing table, and how a browser
gets in (a signed billing link, or the app's own JWT).

Every page is for the one customer its session names; every form carries the session's CSRF
token; every action calls the same use case as the JSON API and is audited as the customer's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from tollgate.bootstrap import Container
from tollgate.config import ConfigError
from tollgate.domain.errors import InvalidRequest, NotFound, TollgateError
from tollgate.services import customer_actions, customer_billing, page_access
from tollgate.services.addons import set_addon
from tollgate.services.app_sign_in import AppSignIn, SignInRefused
from tollgate.services.page_access import AccessRefused, PageSession
from tollgate.services.subscriptions.reading import get_subscription
from tollgate.services.usage import controls as usage_controls
from tollgate.web.csrf import CsrfRefused, checked_form
from tollgate.web.overview import billing_overview, plan_name
from tollgate.web.pages import message_page, render_page
from tollgate.web.pricing import pricing_table
from tollgate.web.security import framing_allowed
from tollgate_client.views import SubscriptionView

router = APIRouter(include_in_schema=False)
COOKIE = "tollgate_billing"
NOTICES = {
    "changed": ("ok", "Your plan was changed."),
    "scheduled": ("ok", "Your plan changes at the end of this period."),
    "canceled": ("warn", "Your plan is canceled at the end of this period. You can resume it."),
    "resumed": ("ok", "Your plan continues; it was not canceled."),
    "portal": ("ok", "Welcome back. Changes made there show here in a moment."),
    "checkout-canceled": ("warn", "Checkout was canceled; nothing was charged."),
    "credits": ("ok", "Payment received: your credits are added in a moment."),
    "addon": ("ok", "Your add-ons are changed; they show here in a moment."),
    "spend-cap": ("ok", "Your spend cap was saved."),
    "add-alert": ("ok", "The usage alert was added."),
    "remove-alert": ("ok", "The usage alert was removed."),
}


def _app(request: Request) -> Container:
    return request.app.state.container


def _secure(request: Request, app: Container) -> bool:
    forwarded = request.headers.get("x-forwarded-proto")
    public = app.settings.public_url or ""
    return request.url.scheme == "https" or forwarded == "https" or public.startswith("https://")


def _base(request: Request, app: Container) -> str:
    return (app.settings.public_url or str(request.base_url)).rstrip("/")


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _refused(request: Request, app: Container, error: Exception, status: int) -> Response:
    titles = {401: "Please open your billing page again", 403: "This link is not valid"}
    response = message_page(
        request,
        settings=app.settings,
        status=status,
        title=titles.get(status, "Not allowed"),
        message=f"{_sentence(str(error))} Open billing from your account in the app again.",
        headers={"WWW-Authenticate": 'Cookie realm="billing"'} if status == 401 else None,
    )
    response.delete_cookie(COOKIE, path="/")
    return response


def _sign_in(request: Request, app: Container) -> AppSignIn:
    state = request.app.state
    existing = getattr(state, "app_sign_in", None)
    if existing is None:
        existing = AppSignIn(app.settings)
        state.app_sign_in = existing
    return existing


def _page_session(request: Request, app: Container) -> PageSession:
    """Return the browser's session; raise AccessRefused (or SignInRefused) if it has none."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and app.settings.jwt_jwks_url:
        token = header[7:].strip()
        customer = _sign_in(request, app).customer_of(token)
        # No cookie here: the token itself is the session, so its CSRF token is stable.
        nonce = hashlib.sha256(token.encode()).hexdigest()[:32]
        expires = app.clock.now() + page_access.PAGE_SESSION
        return PageSession(customer, expires, nonce, "jwt")
    value = request.cookies.get(COOKIE)
    if not value:
        raise AccessRefused("You are not signed in to billing (or your session ended).")
    return page_access.read_session_cookie(settings=app.settings, clock=app.clock, value=value)


def _set_session_cookie(
    response: Response, request: Request, app: Container, session: PageSession
) -> None:
    secure = _secure(request, app)
    # Framed in another site's page, a Lax cookie is never sent: there it must be None+Secure.
    same_site = "none" if secure and framing_allowed(app.settings) else "lax"
    response.set_cookie(
        COOKIE,
        page_access.session_cookie(app.settings, session),
        max_age=int(page_access.PAGE_SESSION.total_seconds()),
        httponly=True,
        secure=secure,
        samesite=same_site,  # type: ignore[arg-type]
        path="/",
    )


def _render(
    request: Request, app: Container, session: PageSession | None, template: str, **context: Any
) -> Response:
    return render_page(
        request,
        template,
        settings=app.settings,
        secret=page_access.page_secret(app.settings),
        session_id=session.nonce if session else None,
        session=session,
        **context,
    )


def _failed(request: Request, app: Container, error: TollgateError) -> Response:
    return message_page(
        request,
        settings=app.settings,
        status=404 if isinstance(error, NotFound) else int(getattr(error, "status", 400)),
        title="That did not work",
        message=error.message,
        link="/billing",
    )


def usage_controls_of(app: Container, customer_id: str) -> usage_controls.UsageControls:
    """The customer's spend cap and alerts (the page's `_usage_controls.html`)."""
    return usage_controls.usage_controls(app, customer_id=customer_id)


# -- getting in ----------------------------------------------------------------------------


@router.get("/billing/session/{token}")
async def open_billing_link(token: str, request: Request) -> Response:
    """A signed link: open a page session for its customer, then show the page without the
    token in the address bar."""
    app = _app(request)
    try:
        session = page_access.redeem_billing_link(
            settings=app.settings, clock=app.clock, token=token
        )
    except AccessRefused as refused:
        return _refused(request, app, refused, 401 if refused.expired else 403)
    # Only the page's own states pass through (Checkout's success and cancel URLs may be the
    # link itself, so the buyer lands signed in).
    kept = {
        key: value
        for key, value in request.query_params.items()
        if (key, value)
        in {("embed", "1"), ("checkout", "success"), ("checkout", "canceled"), ("done", "portal")}
    }
    target = "/billing" + (f"?{urlencode(kept)}" if kept else "")
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(response, request, app, session)
    return response


@router.api_route("/billing/sign-in", methods=["GET", "POST"])
async def sign_in_with_app_token(request: Request) -> Response:
    """The app's JWT (`token` in a form or the query): open a page session for the customer
    its claim names."""
    app = _app(request)
    token = request.query_params.get("token")
    if request.method == "POST":
        form = await request.form()
        posted = form.get("token")
        token = posted if isinstance(posted, str) else token
    try:
        if not token:
            raise SignInRefused("no sign-in token was given.")
        verifier = _sign_in(request, app)
        customer_id = await run_in_threadpool(verifier.customer_of, token)
        await run_in_threadpool(
            customer_billing.list_invoices, db=app.db, customer_id=customer_id, limit=1
        )
    except (SignInRefused, NotFound) as refused:
        return _refused(request, app, refused, 401)
    except ConfigError as missing:
        return _refused(request, app, missing, 403)
    session = page_access.new_page_session(clock=app.clock, customer_id=customer_id, via="jwt")
    wanted = request.query_params.get("next", "/billing")
    target = wanted if wanted in ("/billing", "/pricing", "/billing?embed=1") else "/billing"
    response = RedirectResponse(target, status_code=303)
    _set_session_cookie(response, request, app, session)
    return response


# -- the billing page ------------------------------------------------------------------------


@router.get("/billing")
async def billing_page(request: Request) -> Response:
    """The customer's plan, usage, credits and invoices, with the buttons to change them."""
    app = _app(request)
    try:
        session = _page_session(request, app)
        overview = await run_in_threadpool(billing_overview, app, session.customer_id)
        controls = await run_in_threadpool(usage_controls_of, app, session.customer_id)
    except (AccessRefused, SignInRefused) as refused:
        return _refused(request, app, refused, 401)
    except NotFound as missing:
        return _refused(request, app, missing, 403)
    notice = NOTICES.get(request.query_params.get("done", ""))
    activating = request.query_params.get("checkout") == "success" and not overview.live
    if request.query_params.get("checkout") == "success" and overview.live:
        notice = ("ok", f"Payment received: you are on {overview.plan_name}.")
    if request.query_params.get("checkout") == "canceled":
        notice = NOTICES["checkout-canceled"]
    return _render(
        request,
        app,
        session,
        "billing.html",
        o=overview,
        controls=controls,
        notice=notice,
        activating=activating,
        now=app.clock.now(),
        proration=app.settings.immediate_proration_behavior,
    )


async def _action(
    request: Request, run: Callable[[Container, PageSession, FormData], Awaitable[Response]]
) -> Response:
    """Check the session and the form's CSRF token, then run the action."""
    app = _app(request)
    try:
        session = _page_session(request, app)
        form = await checked_form(request, page_access.page_secret(app.settings), session.nonce)
    except (AccessRefused, SignInRefused) as refused:
        return _refused(request, app, refused, 401)
    except CsrfRefused as refused:
        return message_page(
            request,
            settings=app.settings,
            status=403,
            title="Please try again",
            message=str(refused),
            link="/billing",
        )
    try:
        return await run(app, session, form)
    except TollgateError as error:
        return _failed(request, app, error)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _seats(form: FormData) -> int | None:
    raw = _text(form, "seats")
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise InvalidRequest("seats must be a whole number from 1", param="seats")
    return int(raw)


def _chosen_plan(form: FormData) -> dict[str, Any]:
    """The plan, interval (a month unless said) and seats the form chose."""
    return {
        "plan": _text(form, "plan"),
        "interval": _text(form, "interval") or "month",
        "seats": _seats(form),
    }


@router.post("/billing/preview")
async def preview_change(request: Request) -> Response:
    """Show what a plan, interval or seat change costs before the customer confirms it."""

    async def run(app: Container, session: PageSession, form: FormData) -> Response:
        choice = _chosen_plan(form)
        chosen = app.catalog.plans.get(choice["plan"])
        if chosen is not None and chosen.is_free:
            current = await run_in_threadpool(
                get_subscription, app, customer_id=session.customer_id
            )
            return _render(
                request,
                app,
                session,
                "change.html",
                preview=None,
                free=chosen,
                current=current,
                plan_name=chosen.name,
            )
        preview = await run_in_threadpool(
            customer_billing.preview_subscription_change,
            app,
            customer_id=session.customer_id,
            **choice,
        )
        return _render(
            request,
            app,
            session,
            "change.html",
            preview=preview,
            free=None,
            current=None,
            plan_name=plan_name(app.catalog, preview.plan),
        )

    return await _action(request, run)


@router.post("/billing/change")
async def confirm_change(request: Request) -> Response:
    """Make the change the customer confirmed on the preview."""

    def where_next(changed: SubscriptionView) -> str:
        if changed.url:
            # The change waits for the customer to confirm its payment (3-D Secure): there.
            return changed.url
        done = "scheduled" if changed.pending_change is not None else "changed"
        return f"/billing?done={done}"

    return await _run_use_case(
        request,
        customer_actions.change_plan_as_customer,
        where_next,
        lambda app, session, form: _chosen_plan(form),
    )


@router.post("/billing/checkout")
async def go_to_checkout(request: Request) -> Response:
    """Open Stripe Checkout for the chosen plan (the customer has no subscription yet)."""

    return await _open_checkout(
        request,
        customer_actions.checkout_as_customer,
        success="checkout=success",
        arguments=_chosen_plan,
    )


async def _open_checkout(
    request: Request,
    use_case: Callable[..., Any],
    *,
    success: str,
    arguments: Callable[[FormData], dict[str, Any]],
) -> Response:
    """Send the signed-in customer to the Checkout Session `use_case` opens (with `arguments`
    read from the form); Checkout comes back to the billing page with `success` in its query,
    or saying it was canceled."""

    async def run(app: Container, session: PageSession, form: FormData) -> Response:
        base = _base(request, app)
        checkout = await run_in_threadpool(
            use_case,
            app,
            customer_id=session.customer_id,
            success_url=f"{base}/billing?{success}",
            cancel_url=f"{base}/billing?checkout=canceled",
            **arguments(form),
        )
        return RedirectResponse(checkout.url, status_code=303)

    return await _action(request, run)


@router.post("/billing/portal")
async def go_to_portal(request: Request) -> Response:
    """Open the Customer Portal (payment methods, invoices); it returns to the billing page."""

    async def run(app: Container, session: PageSession, form: FormData) -> Response:
        url = await run_in_threadpool(
            customer_actions.open_portal_as_customer,
            app,
            customer_id=session.customer_id,
            return_url=f"{_base(request, app)}/billing?done=portal",
        )
        return RedirectResponse(url, status_code=303)

    return await _action(request, run)


@router.post("/billing/cancel")
async def cancel_plan(request: Request) -> Response:
    """Cancel at the end of the period (the customer confirmed on the page)."""
    return await _run_use_case(request, customer_actions.cancel_as_customer, "canceled")


@router.post("/billing/resume")
async def resume_plan(request: Request) -> Response:
    """Undo the cancel at period end."""
    return await _run_use_case(request, customer_actions.resume_as_customer, "resumed")


async def _run_use_case(
    request: Request,
    use_case: Callable[..., Any],
    done: str | Callable[[Any], str],
    arguments: Callable[[Container, PageSession, FormData], dict[str, Any]] | None = None,
) -> Response:
    """Run a use case for the signed-in customer (cancel, resume, an add-on: with `arguments`
    read from the form), then show the page saying `done` (or go where `done` says, given
    what the use case returned)."""

    async def run(app: Container, session: PageSession, form: FormData) -> Response:
        result = await run_in_threadpool(
            use_case,
            app,
            customer_id=session.customer_id,
            **(arguments(app, session, form) if arguments else {}),
        )
        app.forget_decisions([session.customer_id])
        where = done(result) if callable(done) else f"/billing?done={done}"
        return RedirectResponse(where, status_code=303)

    return await _action(request, run)


@router.post("/billing/credits")
async def buy_credits(request: Request) -> Response:
    """Open Checkout for a credit pack."""
    return await _open_checkout(
        request,
        customer_actions.buy_credits_as_customer,
        success="done=credits",
        arguments=lambda form: {"pack": _text(form, "pack")},
    )


@router.post("/billing/addons")
async def change_addon(request: Request) -> Response:
    """Set how many units of an add-on the customer holds (it confirmed on the page)."""

    def arguments(app: Container, session: PageSession, form: FormData) -> dict[str, Any]:
        raw = _text(form, "quantity")
        if not raw.isdigit() or int(raw) > 10_000:
            raise InvalidRequest("quantity must be a whole number from 0", param="quantity")
        return {
            "addon_id": _text(form, "addon"),
            "quantity": int(raw),
            "actor": f"customer:{session.customer_id}",
        }

    return await _run_use_case(request, set_addon, "addon", arguments)


# -- the pricing table -----------------------------------------------------------------------


def _pricing(request: Request, fragment: bool) -> Response:
    app = _app(request)
    session: PageSession | None
    try:
        session = _page_session(request, app)
    except (AccessRefused, SignInRefused):
        session = None  # the table is public; only its buttons need a customer
    current = None
    if session is not None:
        try:
            current = get_subscription(app, customer_id=session.customer_id)
        except NotFound:
            session = None
    table = pricing_table(
        app.catalog,
        interval=request.query_params.get("interval") or (current.interval if current else None),
        currency=request.query_params.get("currency") or (current.currency if current else None),
        current_plan=current.plan if current else None,
    )
    return _render(
        request,
        app,
        session,
        "pricing_fragment.html" if fragment else "pricing.html",
        table=table,
        current=current,
        fragment=fragment,
    )


@router.get("/pricing")
async def pricing_page(request: Request) -> Response:
    """The plans side by side (`?interval=`, `?currency=`; `?embed=1` for an iframe)."""
    return await run_in_threadpool(_pricing, request, False)


@router.get("/pricing/fragment")
async def pricing_fragment(request: Request) -> Response:
    """The pricing table alone, to embed in the app's own page (an iframe)."""
    return await run_in_threadpool(_pricing, request, True)
