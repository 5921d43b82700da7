"""Tax through Stripe's events: a customer's tax IDs and tax status, and an invoice's taxes by
rate, mirrored in any order and with duplicates (tax rates fetched from Stripe once)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import stripe

from tests.integration.test_webhooks import (
    Hooks,
    customer_obj,
    event_obj,
    hooks,
    invoice_obj,
    known_customer,
    new_id,
    refetches,
)
from tollgate.db.models import Customer, CustomerTaxId, Invoice, TaxRate

__all__ = ["hooks"]
T0 = 1_790_000_000


def tax_id_obj(txi_id: str, cus_id: str, status: str) -> dict[str, Any]:
    return {
        "id": txi_id,
        "object": "tax_id",
        "country": "DE",
        "created": T0,
        "customer": cus_id,
        "livemode": False,
        "owner": {"customer": cus_id, "type": "customer"},
        "type": "eu_vat",
        "value": "DE123456789",
        "verification": {"status": status, "verified_address": None, "verified_name": None},
    }


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_tax_id_events_in_any_order_end_with_the_id_deleted(
    hooks: Hooks, order: tuple[int, ...]
) -> None:
    cus_id = known_customer(hooks)
    txi_id = new_id("txi")
    events = [
        event_obj("customer.tax_id.created", tax_id_obj(txi_id, cus_id, "pending"), created=T0),
        event_obj("customer.tax_id.updated", tax_id_obj(txi_id, cus_id, "verified"), created=T0),
        event_obj(
            "customer.tax_id.deleted", tax_id_obj(txi_id, cus_id, "verified"), created=T0 + 1
        ),
    ]
    for index in order:
        hooks.deliver(events[index])
    hooks.deliver(events[order[0]])  # a duplicate changes nothing
    row = hooks.get(CustomerTaxId, txi_id)
    assert (row.customer_id, row.type, row.value, row.deleted) == (
        "acme",
        "eu_vat",
        "DE123456789",
        True,
    )


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_verification_settles_whichever_event_of_the_second_comes_last(
    hooks: Hooks, order: tuple[int, ...]
) -> None:
    cus_id = known_customer(hooks)
    txi_id = new_id("txi")
    events = [
        event_obj("customer.tax_id.created", tax_id_obj(txi_id, cus_id, "pending")),
        event_obj("customer.tax_id.updated", tax_id_obj(txi_id, cus_id, "verified")),
    ]
    for index in order:
        hooks.deliver(events[index])
    row = hooks.get(CustomerTaxId, txi_id)
    assert (row.verification, row.deleted) == ("verified", False)


def test_customer_updated_mirrors_the_address_and_tax_status(hooks: Hooks) -> None:
    cus_id = known_customer(hooks)
    changed = {
        **customer_obj(cus_id, app_id="acme"),
        "address": {"line1": "1 Main St", "line2": None, "city": "Albany", "state": "NY",
                    "postal_code": "12207", "country": "US"},
        "tax_exempt": "exempt",
    }  # fmt: skip
    hooks.deliver(event_obj("customer.updated", changed, created=T0 + 5))
    row = hooks.get(Customer, "acme")
    assert row.address == {
        "line1": "1 Main St",
        "city": "Albany",
        "state": "NY",
        "postal_code": "12207",
        "country": "US",
    }
    assert row.tax_exempt == "exempt"


def test_an_invoices_taxes_are_kept_by_rate_and_each_rate_is_fetched_once(
    hooks: Hooks, client: stripe.StripeClient
) -> None:
    def rate(name: str, percentage: float) -> str:
        made = client.v1.tax_rates.create(
            params={"display_name": name, "percentage": percentage, "inclusive": False,
                    "jurisdiction": "QC", "country": "CA", "state": "QC"}
        )  # fmt: skip
        return str(made.id)

    gst, qst = rate("GST", 5), rate("QST", 9.975)
    cus_id = known_customer(hooks)
    taxes = [
        {"amount": amount, "tax_behavior": "exclusive", "type": "tax_rate_details",
         "tax_rate_details": {"tax_rate": rate_id}, "taxability_reason": "standard_rated",
         "taxable_amount": 2900}
        for rate_id, amount in ((gst, 145), (qst, 289))
    ]  # fmt: skip
    before = refetches("tax_rates", "tax_rates")
    for number in range(2):
        in_id = new_id("in")
        invoice = {**invoice_obj(in_id, cus_id, status="paid"), "total_taxes": taxes}
        hooks.deliver(event_obj("invoice.paid", invoice, created=T0 + 10 + number))
        row = hooks.get(Invoice, in_id)
        assert [
            (t["display_name"], t["percentage"], t["jurisdiction"], t["amount"])
            for t in row.tax_amounts
        ] == [("GST", "5", "QC", 145), ("QST", "9.975", "QC", 289)]
        assert row.tax == 434
    # Both rates in one request, for the first invoice only.
    assert refetches("tax_rates", "tax_rates") == before + 1
    assert hooks.get(TaxRate, qst).percentage == "9.975"
