"""Automatic tax (STRIPE_AUTOMATIC_TAX) from stripesim's rate table, through Tollgate's API and
stripesim's hosted pages: a Quebec customer's invoice has GST and QST lines, shown one by one in
the invoice list, the billing page (Chromium, 1280 and 375 px), the receipt (real SMTP) and the
invoice PDF (read with poppler's pdftotext); an exempt or reverse-charge customer pays none and
the invoice says so. Checkout collects the billing address and a tax ID; a direct subscription
needs an address; tax status and tax IDs are set through the API."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e import test_billing_page_browser as billing_browser
from tests.e2e.conftest import World
from tests.integration import test_notifications_delivery as delivery
from tollgate.db.models import Notification
from tollgate.services.outbox import deliver_emails

smtp = delivery.smtp  # a real SMTP server (aiosmtpd) that keeps what it receives
# The billing page's browser fixtures: one Chromium, pages that may only reach 127.0.0.1.
browser, hosts, page = billing_browser.browser, billing_browser.hosts, billing_browser.page
screenshots = billing_browser.screenshots
# Debian's poppler-utils: an independent reader of the PDFs stripesim writes.
PDFTOTEXT = shutil.which("pdftotext") or "/usr/bin/pdftotext"

QUEBEC = {
    "line1": "1 rue Sainte-Catherine",
    "city": "Montréal",
    "state": "QC",
    "postal_code": "H2X 1Y4",
    "country": "CA",
}
BERLIN = {"line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117", "country": "DE"}


def subscribed_at(
    world: World, customer_id: str, address: dict[str, Any], tax_exempt: str = "none"
) -> Any:
    """Subscribe a customer at `address` to Pro by card; return its first Stripe invoice."""
    stripe_id = str(world.create_customer(customer_id)["stripe_customer_id"])
    world.call("PATCH", f"/v1/customers/{customer_id}", json={"address": address})
    world.stripe.v1.customers.update(stripe_id, params={"tax_exempt": tax_exempt})
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    world.settle()
    (invoice,) = world.invoices(stripe_id)
    return invoice


def test_a_quebec_customers_invoice_has_gst_and_qst_lines(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true")
    invoice = subscribed_at(world, "quebec-org", QUEBEC)
    taxes = {}
    for total in invoice.total_taxes:
        rate = world.stripe.v1.tax_rates.retrieve(total.tax_rate_details.tax_rate)
        taxes[rate.display_name] = (float(rate.percentage), total.amount)
    assert taxes == {"GST": (5.0, 145), "QST": (9.975, 289)}  # of $29.00
    assert (invoice.subtotal, invoice.total, invoice.status) == (2900, 3334, "paid")
    (line,) = invoice.lines.data
    assert sorted(tax.amount for tax in line.taxes) == [145, 289]
    mirrored = world.call("GET", "/v1/customers/quebec-org/invoices")["data"]
    assert [(i["total"]["amount"], i["tax"]["amount"], i["amount_paid"]) for i in mirrored] == [
        (3334, 434, {"amount": 3334, "currency": "usd"})
    ]
    # The receipt says the tax apart.
    with world.db.transaction() as session:
        facts = session.scalars(
            sa.select(Notification.facts).where(
                Notification.customer_id == "quebec-org",
                Notification.template == "payment_succeeded",
            )
        ).one()
    assert facts["tax"] == {"amount": 434, "currency": "usd"}

    # Another province, and an exempt customer: their own rate, and none.
    ontario = subscribed_at(world, "ontario-org", {**QUEBEC, "state": "ON"})
    assert [t.amount for t in ontario.total_taxes] == [377]  # HST 13 %
    for status in ("exempt", "reverse"):
        untaxed = subscribed_at(world, f"{status}-org", QUEBEC, tax_exempt=status)
        assert (untaxed.total_taxes, untaxed.total) == ([], 2900)


# -- tax status and tax IDs through the API ------------------------------------------------------


def test_tax_status_and_tax_ids_set_through_the_api_reach_stripe_and_the_mirror(
    world: World,
) -> None:
    stripe_id = str(world.create_customer("vat-org", address=BERLIN)["stripe_customer_id"])
    answer = world.call(
        "PATCH",
        "/v1/customers/vat-org",
        json={"tax_exempt": "reverse", "tax_ids": [{"type": "eu_vat", "value": "DE 123456789"}]},
    )
    assert answer["tax_exempt"] == "reverse"
    assert [(t["type"], t["value"]) for t in answer["tax_ids"]] == [("eu_vat", "DE123456789")]
    assert world.stripe.v1.customers.retrieve(stripe_id).tax_exempt == "reverse"
    (in_stripe,) = world.stripe.v1.customers.tax_ids.list(stripe_id).data
    world.settle()
    # Stripe checks an EU VAT number after it is added: the mirror follows its events.
    (mirrored,) = world.customer("vat-org")["tax_ids"]
    assert (mirrored["id"], mirrored["verification"], mirrored["country"]) == (
        in_stripe.id,
        "verified",
        "DE",
    )
    assert world.customer("vat-org")["tax_exempt"] == "reverse"

    # A refused value changes nothing: not even the valid ID sent beside it.
    refused = world.http.patch(
        "/v1/customers/vat-org",
        json={
            "tax_exempt": "none",
            "tax_ids": [
                {"type": "eu_vat", "value": "DE123456789"},
                {"type": "gb_vat", "value": "GB123456789"},
                {"type": "eu_vat", "value": "123"},
            ],
        },
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("tax_id_invalid", "tax_ids[2]")
    assert [t.value for t in world.stripe.v1.customers.tax_ids.list(stripe_id).data] == [
        "DE123456789"
    ]
    assert world.stripe.v1.customers.retrieve(stripe_id).tax_exempt == "reverse"
    for body, param in (
        ({"tax_exempt": "sometimes"}, "tax_exempt"),
        ({"tax_ids": [{"type": "vat", "value": "1"}]}, "tax_ids[0].type"),
        ({"tax_ids": [{"type": "eu_vat", "value": ""}]}, "tax_ids[0].value"),
    ):
        bad = world.http.patch("/v1/customers/vat-org", json=body)
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, param)

    # The whole set: [] removes them all, in Stripe and in the mirror.
    cleared = world.call("PATCH", "/v1/customers/vat-org", json={"tax_ids": []})
    assert cleared["tax_ids"] == []
    world.settle()
    assert world.stripe.v1.customers.tax_ids.list(stripe_id).data == []
    assert world.customer("vat-org")["tax_ids"] == []


def test_a_tax_id_sent_again_under_its_key_after_its_removal_is_added_again(world: World) -> None:
    # The same value added, removed, then asked for again with the first request's
    # Idempotency-Key: a real add. Its Stripe key once named only the request and the value, so
    # Stripe replayed the first add and answered the removed tax ID: none was left.
    stripe_id = str(world.create_customer("vat-org", address=BERLIN)["stripe_customer_id"])
    vat = {"tax_ids": [{"type": "eu_vat", "value": "DE123456789"}]}
    key = {"Idempotency-Key": "vat-1"}
    first = world.call("PATCH", "/v1/customers/vat-org", json=vat, headers=key)
    world.call("PATCH", "/v1/customers/vat-org", json={"tax_ids": []})
    again = world.call("PATCH", "/v1/customers/vat-org", json=vat, headers=key)
    (in_stripe,) = world.stripe.v1.customers.tax_ids.list(stripe_id).data
    assert in_stripe.value == "DE123456789"
    assert in_stripe.id != first["tax_ids"][0]["id"]
    assert [t["id"] for t in again["tax_ids"]] == [in_stripe.id]
    world.settle()
    assert [t["id"] for t in world.customer("vat-org")["tax_ids"]] == [in_stripe.id]


def test_without_an_address_a_direct_subscription_is_refused_under_automatic_tax(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true")
    stripe_id = str(world.create_customer("nowhere-org")["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    refused = world.http.put(
        "/v1/customers/nowhere-org/subscription",
        json={"plan": "pro", "interval": "month", "trial_days": 0},
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("address_required", "address")
    assert "PATCH /v1/customers" in error["message"]
    listed = world.stripe.v1.subscriptions.list(params={"customer": stripe_id, "status": "all"})
    assert listed.data == [] and world.invoices(stripe_id) == []
    # With an address, the same request subscribes, taxed where the customer is.
    world.call("PATCH", "/v1/customers/nowhere-org", json={"address": {**QUEBEC}})
    world.put_subscription("nowhere-org", plan="pro", interval="month", trial_days=0)
    world.settle()
    (invoice,) = world.invoices(stripe_id)
    assert invoice.total == 3334


# -- tax lines: the invoice list, the receipt, the PDF -------------------------------------------


def pdf_text(url: str) -> str:
    """Fetch an invoice PDF and read its text out with poppler's pdftotext."""
    answer = httpx.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.content.startswith(b"%PDF-")
    read = subprocess.run(
        [PDFTOTEXT, "-layout", "-", "-"], input=answer.content, capture_output=True, check=True
    )
    return read.stdout.decode()


def test_each_tax_is_a_line_of_its_own_in_the_api_the_receipt_and_the_pdf(
    make_world: Callable[..., World], smtp: Any
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true", TOLLGATE_SMTP_URL=delivery._smtp_url(smtp))
    subscribed_at(world, "quebec-org", QUEBEC)
    (invoice,) = world.call("GET", "/v1/customers/quebec-org/invoices")["data"]
    usd = "usd"
    assert invoice["taxes"] == [
        {
            "name": "GST",
            "jurisdiction": "QC",
            "percentage": "5",
            "inclusive": False,
            "amount": {"amount": 145, "currency": usd},
        },
        {
            "name": "QST",
            "jurisdiction": "QC",
            "percentage": "9.975",
            "inclusive": False,
            "amount": {"amount": 289, "currency": usd},
        },
    ]
    assert (invoice["tax_exempt"], invoice["tax_note"]) == ("none", None)

    app = world.container
    deliver_emails(db=app.db, settings=app.settings, catalog=app.catalog, clock=app.clock)
    (receipt,) = [m for m in smtp.inbox.messages if "Receipt" in str(m["Subject"])]
    text = receipt.get_body(preferencelist=("plain",)).get_content()
    assert "GST 5 %: $1.45" in text and "QST 9.975 %: $2.89" in text
    html = receipt.get_body(preferencelist=("html",)).get_content()
    assert "QST 9.975 %" in html and "$2.89" in html
    # The receipt's PDF link answers a real PDF with the lines, taxes and total.
    link = re.search(r"Invoice \(PDF\): (\S+)", text)
    assert link is not None and link.group(1) == invoice["invoice_pdf"]
    printed = pdf_text(link.group(1))
    for expected in (
        "Pro",
        "Subtotal: $29.00",
        "GST 5 % (QC): $1.45",
        "QST 9.975 % (QC): $2.89",
        "Total: $33.34",
        "1 rue Sainte-Catherine",
    ):
        assert expected in printed, printed

    # A reverse-charge customer: no tax, and the invoice says why.
    subscribed_at(world, "reverse-org", BERLIN, tax_exempt="reverse")
    (untaxed,) = world.call("GET", "/v1/customers/reverse-org/invoices")["data"]
    assert (untaxed["taxes"], untaxed["tax_note"]) == ([], "Reverse charge")
    assert "Reverse charge" in pdf_text(untaxed["invoice_pdf"])


def test_a_discounted_invoice_pdf_shows_the_discount_before_the_tax(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true")
    stripe_id = str(world.create_customer("promo-org", address=QUEBEC)["stripe_customer_id"])
    coupon = world.stripe.v1.coupons.create(
        params={"percent_off": 10, "duration": "once", "name": "Launch 10 %"}
    )
    world.stripe.v1.invoice_items.create(
        params={"customer": stripe_id, "amount": 10000, "currency": "usd", "description": "Setup"}
    )
    draft = world.stripe.v1.invoices.create(
        params={
            "customer": stripe_id,
            "pending_invoice_items_behavior": "include",
            "automatic_tax": {"enabled": True},
            "discounts": [{"coupon": coupon.id}],
        }
    )
    invoice = world.stripe.v1.invoices.finalize_invoice(draft.id)
    printed = pdf_text(str(invoice.invoice_pdf))
    for expected in (
        "Setup",
        "Subtotal: $100.00",
        "Launch 10 %: -$10.00",
        "GST 5 % (QC): $4.50",
        "QST 9.975 % (QC): $8.98",
        "Total: $103.48",
    ):
        assert expected in printed, printed


# -- hosted Checkout collects the address and the tax ID ------------------------------------------


def test_checkout_refuses_a_missing_address_and_a_malformed_tax_id(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_AUTOMATIC_TAX="true")
    world.create_customer("form-org")
    url = world.checkout("form-org", plan="pro", interval="month", trial_days=0)["url"]
    page = httpx.get(url)
    assert page.status_code == 200
    for field_name in ("address_country", "address_line1", "address_postal_code", "tax_id_value"):
        assert f'name="{field_name}"' in page.text
    card = {"card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34", "card_cvc": "123"}
    typed = {f"address_{k}": v for k, v in QUEBEC.items()}
    for missing, says in (
        ("address_postal_code", "postal code is incomplete"),
        ("address_state", "state or province is incomplete"),
        ("address_country", "country is incomplete"),
    ):
        answer = httpx.post(url, data={**card, **{**typed, missing: ""}})
        assert answer.status_code == 400 and says in answer.text, answer.text
    bad_id = {**card, **typed, "business_name": "Acme", "tax_id_type": "eu_vat"}
    answer = httpx.post(url, data={**bad_id, "tax_id_value": "123"})
    assert answer.status_code == 400 and "must start with a country code" in answer.text
    world.settle()
    assert world.subscription("form-org")["status"] == "none"
    assert world.customer("form-org")["address"] is None


needs_chromium = pytest.mark.skipif(
    not billing_browser.CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
)


@pytest.mark.browser
@needs_chromium
def test_a_buyer_types_a_quebec_address_and_tax_id_in_checkout_and_sees_both_taxes(
    make_world: Callable[..., World], page: Any, screenshots: Path
) -> None:
    world = make_world(
        STRIPE_AUTOMATIC_TAX="true", TOLLGATE_SECRET_KEY="tax-browser-secret-" + "k" * 16
    )
    world.create_customer("org_quebec", name="Érable Inc.")
    done = f"{world.base_url}/healthz"  # the page may reach only this machine
    url = world.checkout(
        "org_quebec", plan="pro", interval="month", trial_days=0, success_url=done
    )["url"]
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(url)
    page.select_option("#address_country", "CA")
    page.fill("#address_line1", QUEBEC["line1"])
    page.fill("#address_city", QUEBEC["city"])
    page.fill("#address_state", "qc")
    page.fill("#address_postal_code", QUEBEC["postal_code"])
    page.fill("#business_name", "Érable Inc.")
    page.select_option("#tax_id_type", "ca_qst")
    page.fill("#tax_id_value", "1234567890 TQ 0001")
    screenshots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshots / "checkout-tax.png"), full_page=True)
    page.click("#submit")
    page.wait_for_url(done)
    world.settle()

    customer = world.customer("org_quebec")
    assert customer["address"] == {**QUEBEC, "state": "QC"}
    assert [(t["type"], t["value"]) for t in customer["tax_ids"]] == [
        ("ca_qst", "1234567890TQ0001")
    ]
    assert customer["name"] == "Érable Inc." and customer["plan"] == "pro"
    (invoice,) = world.call("GET", "/v1/customers/org_quebec/invoices")["data"]
    assert [(t["name"], t["amount"]["amount"]) for t in invoice["taxes"]] == [
        ("GST", 145),
        ("QST", 289),
    ]

    link = str(world.call("POST", "/v1/customers/org_quebec/billing-session")["url"])
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(link)
        taxes = page.locator("#invoices .invoice-tax").all_inner_texts()
        assert taxes == ["GST 5 % $1.45", "QST 9.975 % $2.89"], taxes
        # The next invoice, as Stripe previews it: the same two taxes.
        assert page.inner_text("#upcoming-total") == "$33.34"
        upcoming = page.locator("#upcoming-invoice .upcoming-tax").all_inner_texts()
        assert upcoming == ["GST 5 % $1.45", "QST 9.975 % $2.89"], upcoming
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(screenshots / f"billing-tax-{width}.png"), full_page=True)
        page.locator("#invoices").screenshot(path=str(screenshots / f"invoices-tax-{width}.png"))
    pdf = page.locator("#invoices a", has_text="PDF").get_attribute("href")
    assert pdf == invoice["invoice_pdf"]
    assert "QST 9.975 % (QC): $2.89" in pdf_text(str(pdf))
