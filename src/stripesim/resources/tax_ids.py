"""Customer tax IDs: add, read, list, delete; they show on the customer's invoices.

Stripe checks EU, UK, Swiss, Norwegian and Australian VAT numbers with the authorities after they
are added: the simulator answers `pending` and settles at once with `customer.tax_id.updated`,
`verified` unless the value is Stripe's test value for a number that fails (`...111111111`).
Other types are not checked (`unavailable`).
"""

from __future__ import annotations

from typing import Any

from stripesim import objects
from stripesim.errors import StripeError, parameter_missing
from stripesim.lists import customer_owned, param_name
from stripesim.registry import Ctx, customer_list_route, customer_retrieve_route, route

KIND = "tax_id"
_VERIFIED_TYPES = ("eu_vat", "gb_vat", "ch_vat", "no_vat", "au_abn")
_FAILING_VALUE = "111111111"
# EU VAT numbers start with the country's code, except Greece's (EL).
_VAT_PREFIX_COUNTRY = {"EL": "GR", "XI": "GB"}


def check_tax_id(entry: Any, prefix: str) -> tuple[str, str]:
    """Return the (type, value) of a tax ID a request describes."""
    if not isinstance(entry, dict) or not entry.get("type"):
        raise parameter_missing(param_name(prefix, "type"))
    if not entry.get("value"):
        raise parameter_missing(param_name(prefix, "value"))
    value = str(entry["value"]).replace(" ", "").upper()
    if entry["type"] == "eu_vat" and not value[:2].isalpha():
        raise StripeError(
            f"Invalid value for eu_vat: {entry['value']}. It must start with a country code.",
            code="tax_id_invalid",
            param=param_name(prefix, "value"),
        )
    return str(entry["type"]), value


def _country(kind: str, value: str) -> str | None:
    if kind in ("eu_vat", "eu_oss_vat"):
        return _VAT_PREFIX_COUNTRY.get(value[:2], value[:2])
    head = kind.split("_", 1)[0]
    return head.upper() if len(head) == 2 else None


def new_tax_id(ctx: Ctx, customer: dict[str, Any], kind: str, value: str) -> dict[str, Any]:
    """Store a tax ID on `customer`, announce it, and settle its verification."""
    now = ctx.now_for_customer(customer["id"])
    checked = kind in _VERIFIED_TYPES
    tax_id = ctx.build(
        KIND,
        "txi",
        created=now,
        country=_country(kind, value),
        customer=customer["id"],
        owner={"customer": customer["id"], "customer_account": None, "type": "customer"},
        type=kind,
        value=value,
        verification={
            "status": "pending" if checked else "unavailable",
            "verified_address": None,
            "verified_name": None,
        },
    )
    ctx.account.add(tax_id)
    ctx.emit("customer.tax_id.created", tax_id, created=now)
    if checked:
        previous = {"verification": dict(tax_id["verification"])}
        verified = not value.endswith(_FAILING_VALUE)
        tax_id["verification"] = {
            "status": "verified" if verified else "unverified",
            "verified_address": None,
            "verified_name": customer.get("name") if verified else None,
        }
        ctx.emit("customer.tax_id.updated", tax_id, previous=previous, created=now)
    return tax_id


@route("POST", "/v1/customers/{customer_id}/tax_ids", "CustomerTaxIdCreateParams")
def create_tax_id(ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = ctx.account.get(customer_id, "customer")
    kind, value = check_tax_id(params, "")
    return new_tax_id(ctx, customer, kind, value)


customer_retrieve_route(
    "/v1/customers/{customer_id}/tax_ids/{tax_id_id}",
    KIND,
    "CustomerTaxIdRetrieveParams",
    label="tax ID",
)


@route("DELETE", "/v1/customers/{customer_id}/tax_ids/{tax_id_id}", "CustomerTaxIdDeleteParams")
def delete_tax_id(
    ctx: Ctx, params: dict[str, Any], customer_id: str, tax_id_id: str
) -> dict[str, Any]:
    tax_id = customer_owned(ctx.account, customer_id, tax_id_id, KIND, label="tax ID")
    ctx.account.delete(tax_id)
    ctx.emit("customer.tax_id.deleted", tax_id, created=ctx.now_for_customer(customer_id))
    return objects.deleted(KIND, tax_id_id)


customer_list_route("/v1/customers/{customer_id}/tax_ids", KIND, "CustomerTaxIdListParams")
