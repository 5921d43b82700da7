"""What the hosted pages (Checkout, the Portal, 3D Secure, invoices) share: templates, lookups."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from stripesim import cards, debits, payments
from stripesim.currency import format_amount
from stripesim.errors import StripeError, card_error
from stripesim.registry import Ctx
from stripesim.state import Account, Simulator

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("stripesim", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)
_templates.filters["money"] = lambda amount, currency: format_amount(int(amount), currency or "usd")


def render_page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render one of the simulator's page templates."""
    return HTMLResponse(_templates.get_template(template).render(**context), status_code=status)


def find_object(sim: Simulator, object_id: str, kind: str) -> tuple[Account, dict[str, Any]] | None:
    """Find an object by id in whichever account (platform or connected) holds it."""
    for account in sim.accounts.values():
        obj = account.find(object_id)
        if obj is not None and obj.get("object") == kind:
            return account, obj
    return None


@contextlib.contextmanager
def hosted(
    sim: Simulator, request: Request, object_id: str, kind: str
) -> Iterator[tuple[Ctx, dict[str, Any]] | None]:
    """Hold the simulator's lock over a page's work on `object_id` (None when it is unknown)."""
    with sim.lock:
        found = find_object(sim, object_id, kind)
        yield (page_ctx(sim, found[0], request), found[1]) if found is not None else None


@contextlib.contextmanager
def hosted_intent(
    sim: Simulator,
    request: Request,
    *,
    waiting: Callable[[dict[str, Any]], bool],
    unknown: str,
    idle: str,
) -> Iterator[tuple[Ctx, dict[str, Any]] | HTMLResponse]:
    """Hold the lock over a page's work on the PaymentIntent or SetupIntent its path names.

    Yield the intent, or the page to answer instead: 404 `unknown` when there is no such
    intent, 409 `idle` when it is not `waiting` for the customer.
    """
    intent_id = request.path_params["intent_id"]
    kind = "setup_intent" if intent_id.startswith("seti_") else "payment_intent"
    with hosted(sim, request, intent_id, kind) as found:
        if found is None:
            yield message_page(404, "Not found", unknown)
        elif not waiting(found[1]):
            yield message_page(409, idle, f"This {kind.replace('_', ' ')} is {found[1]['status']}.")
        else:
            yield found


def page_ctx(sim: Simulator, account: Account, request: Request) -> Ctx:
    """Return a context for a hosted page acting in `account` (events carry no request id)."""
    return Ctx(sim, account, None, None, str(request.base_url).rstrip("/"))  # type: ignore[arg-type]


async def form_of(request: Request) -> dict[str, str]:
    """Read a posted HTML form (nothing, when the request is not a POST)."""
    if request.method != "POST":
        return {}
    form = await request.form()
    return {key: str(value) for key, value in form.items()}


def card_from_form(ctx: Ctx, form: dict[str, str], *, created: int) -> dict[str, Any]:
    """Make a PaymentMethod from a page's card fields; bad input raises a card error."""
    number = form.get("card_number", "").strip()
    if not number:
        raise card_error("Your card number is incomplete.", code="incomplete_number")
    spec = cards.by_number(number)
    expiry = form.get("card_expiry", "").replace(" ", "")
    month_text, _, year_text = expiry.partition("/")
    if not (month_text.isdigit() and year_text.isdigit()):
        raise card_error("Your card's expiration date is incomplete.", code="incomplete_expiry")
    return payments.new_card_payment_method(
        ctx,
        spec,
        exp_month=int(month_text),
        exp_year=int(year_text),
        cvc=form.get("card_cvc") or None,
        billing_details={"name": form.get("cardholder_name") or None, "email": form.get("email")},
        created=created,
    )


def bank_from_form(ctx: Ctx, form: dict[str, str]) -> dict[str, Any]:
    """A `us_bank_account` PaymentMethod from the page's bank fields (Stripe's test numbers)."""
    for key, label in (
        ("account_holder_name", "Your account holder name"),
        ("routing_number", "Your routing number"),
        ("account_number", "Your account number"),
    ):
        if not (form.get(key) or "").strip():
            raise StripeError(f"{label} is incomplete.", param=key)
    return debits.new_bank_payment_method(
        ctx,
        {
            "us_bank_account": {
                "routing_number": form["routing_number"].strip(),
                "account_number": form["account_number"].strip(),
            },
            "billing_details": {
                "name": form["account_holder_name"].strip(),
                "email": form.get("email"),
            },
        },
    )


def message_page(status: int, title: str, message: str, link: str | None = None) -> HTMLResponse:
    """Render a page that only says something (and perhaps links on)."""
    return render_page("message.html", status, title=title, message=message, link=link)
